"""The fleet's tools, called the way the README tells agents to: through ``gate.guard``.

Each simulated tool takes a few milliseconds and now and then fails, so the audit gets success and
error outcomes from the guard. :class:`ObservedGate` is the SDK's ``Gate`` with the demo's live figures
attached: it notes each call's decision latency (to its first decision, a REQUIRE_APPROVAL included),
its approval wait, and its final decision.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from schemas import Decision, Intent
from sluicegate.demo.fleet import ToolCall
from sluicegate.demo.stats import DemoStats
from sluicegate.errors import ActionBlocked
from sluicegate.gate import Gate
from sluicegate.guard import Authorization, GuardSpec

TOOL_FAILURE_SHARE = 0.01
"""How often a simulated tool fails (an ``error`` outcome in the audit)."""
TOOL_TIME_S = (0.002, 0.02)
"""How long a simulated tool runs, uniformly between these."""

simulated_time: ContextVar[datetime | None] = ContextVar("simulated_time", default=None)
"""When the current call happens, if not now (the off-hours rogue's deploys at 2 am)."""


class ToolFailed(Exception):
    """A simulated tool's failure."""


class ObservedGate(Gate):
    """A ``Gate`` reporting every call to the demo's :class:`DemoStats`."""

    def __init__(self, *args: Any, stats: DemoStats, **kwargs: Any) -> None:
        super().__init__(*args, on_pending=self._pending, **kwargs)
        self.stats = stats
        self._asked: dict[Any, float] = {}

    def guard_intent(self, spec: GuardSpec, target: str, params: dict[str, Any]) -> Intent:
        intent = super().guard_intent(spec, target, params)
        when = simulated_time.get()
        return intent if when is None else intent.model_copy(update={"occurred_at": when})

    async def authorize(self, intent: Intent, timeout_s: float | None = None) -> Authorization:
        started = time.perf_counter()
        self._asked[intent.request_id] = started
        try:
            auth = await super().authorize(intent, timeout_s)
        finally:
            self._asked.pop(intent.request_id, None)
        self.stats.record(auth.decision, intent.tool, (time.perf_counter() - started) * 1000,
                          time.monotonic(), reviewed=auth.pending is not None)
        return auth

    def _pending(self, intent: Intent, pending: Decision) -> None:
        """A call turned to waiting for a reviewer: its decision latency ends here."""
        asked = self._asked.get(intent.request_id)
        if asked is not None:
            self.stats.pending((time.perf_counter() - asked) * 1000)


Tool = Callable[..., Coroutine[Any, Any, None]]


class FleetTools:
    """One guarded function per agent and tool, made on first use (the guard checks identity once)."""

    def __init__(self, gate: ObservedGate, seed: int) -> None:
        self.gate = gate
        self._rng = random.Random(seed)
        self._guarded: dict[tuple[str, str, str, str], Tool] = {}

    async def call(self, call: ToolCall) -> None:
        """Run ``call``'s tool through its guard; a blocked call or a failed tool is counted, not raised."""
        simulated_time.set(call.occurred_at)
        try:
            await self._tool(call)(**call.params)
        except ActionBlocked:
            return  # the observed gate counted the decision
        except ToolFailed:
            self.gate.stats.ran("error")
        else:
            self.gate.stats.ran("success")

    def _tool(self, call: ToolCall) -> Tool:
        key = (call.agent.agent_id, call.tool, call.action.value, call.target)
        guarded = self._guarded.get(key)
        if guarded is None:
            agent = call.agent
            guard = self.gate.guard(tool=call.tool, action=call.action, target=call.target,
                                    params=lambda **params: params, agent_id=agent.agent_id,
                                    agent_role=agent.role, environment=agent.environment, owner=agent.owner)
            guarded = self._guarded[key] = guard(self._run)
        return guarded

    async def _run(self, **params: Any) -> None:
        """The simulated tool: a few milliseconds of work, now and then a failure."""
        await asyncio.sleep(self._rng.uniform(*TOOL_TIME_S))
        if self._rng.random() < TOOL_FAILURE_SHARE:
            raise ToolFailed(f"simulated failure (params {sorted(params)})")
