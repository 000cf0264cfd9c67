"""OpenAI Agents SDK: tool guardrails that let a function tool run only when sluicegate allows the call.

```python
async with Gate(settings) as gate:                 # SLUICEGATE_AGENT_CREDENTIAL: the agent's identity
    guard = SluicegateGuardrails(gate)             # on_block="message" (default) or "raise"
    refund = guard.govern(refund_tool, action="create",
                          target=lambda customer, amount: f"payments:customer/{customer}")
    result = await Runner.run(Agent(name="support", tools=[refund]), "refund c1 40")
```

``govern`` attaches a tool input guardrail and a tool output guardrail to the tool. The input guardrail
turns each call into an intent (``tool`` = the tool's name unless ``name`` is given, ``params`` = the
call's arguments unless a function gives them) and waits for its final decision, so REQUIRE_APPROVAL
waits for the reviewers. ALLOW lets the tool run; anything else rejects the call: with ``message`` the
model reads the decision's determining reasons as the tool's output, with ``raise`` the run stops with
the SDK's ``ToolInputGuardrailTripwireTriggered``. The output guardrail records the outcome. Parallel
calls in one turn are told apart by their call ids: each gets its own intent and decision. For MCP
servers the agent uses, put ``sluicegate mcp proxy`` in front of them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from agents import FunctionTool
from agents.tool_guardrails import (
    ToolGuardrailFunctionOutput,
    ToolInputGuardrail,
    ToolInputGuardrailData,
    ToolOutputGuardrail,
    ToolOutputGuardrailData,
)

from schemas import Action, OutcomeStatus
from sluicegate.adapters.refusal import refusal_text
from sluicegate.errors import InvalidIntent
from sluicegate.gate import Gate
from sluicegate.guard import Authorization, TargetSpec, blocked_error

OnBlock = Literal["message", "raise"]


@dataclass(frozen=True)
class ToolSpec:
    """How the calls of one function tool become intents."""

    tool: str
    action: Action
    target: TargetSpec
    params: Callable[..., Mapping[str, Any]] | None = None
    fail_open: bool = False

    def intent_fields(self, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(target, params) of a call; InvalidIntent when a function of the arguments fails."""
        try:
            target = self.target(**arguments) if callable(self.target) else self.target
            params = dict(self.params(**arguments)) if self.params is not None else arguments
        except Exception as exc:
            raise InvalidIntent(f"cannot compute the intent of {self.tool!r}: {exc!r}") from exc
        return target, params


class SluicegateGuardrails:
    """The input and output guardrails of the tools a gate governs, and which tool is which intent."""

    def __init__(self, gate: Gate, *, on_block: OnBlock = "message") -> None:
        self.gate = gate
        self.on_block = on_block
        self.specs: dict[str, ToolSpec] = {}
        self.running: dict[str, tuple[Authorization, float, bool]] = {}
        """The allowed calls by call id, until their outcome is recorded."""
        self.input: ToolInputGuardrail[Any] = ToolInputGuardrail(self.decide, name="sluicegate")
        self.output: ToolOutputGuardrail[Any] = ToolOutputGuardrail(self.record, name="sluicegate-outcome")

    def govern(
        self, tool: FunctionTool, *, action: Action | str, target: TargetSpec, name: str | None = None,
        params: Callable[..., Mapping[str, Any]] | None = None, fail_open: bool = False,
    ) -> FunctionTool:
        """Attach the guardrails to ``tool``; its calls are intents of ``name`` (default: its name)."""
        self.specs[tool.name] = ToolSpec(name or tool.name, Action(action), target, params, fail_open)
        tool.tool_input_guardrails = [*(tool.tool_input_guardrails or []), self.input]
        tool.tool_output_guardrails = [*(tool.tool_output_guardrails or []), self.output]
        return tool

    async def decide(self, data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        """Allow the call only on ALLOW (or fail-open when governance is unavailable, audited)."""
        context = data.context
        spec = self.specs.get(context.tool_name)
        if spec is None:
            return self._refuse(f"sluicegate: {context.tool_name!r} is not governed by this gate", None)
        try:
            arguments = json.loads(context.tool_arguments or "{}")
            target, params = spec.intent_fields(arguments if isinstance(arguments, dict) else {})
            intent = self.gate.intent(tool=spec.tool, action=spec.action, target=target, params=params)
        except (InvalidIntent, ValueError) as exc:
            return self._refuse(f"sluicegate: {exc}", None)
        auth = await self.gate.authorize(intent)
        fail_open = not auth.allowed and spec.fail_open and auth.may_fail_open
        if not auth.allowed and not fail_open:
            return self._refuse(refusal_text(blocked_error(auth)), auth)
        if fail_open:
            self.gate.record_fail_open(auth)
        self.running[context.tool_call_id] = (auth, time.perf_counter(), fail_open)
        return ToolGuardrailFunctionOutput.allow(output_info=_info(auth))

    async def record(self, data: ToolOutputGuardrailData) -> ToolGuardrailFunctionOutput:
        """Record the outcome of an allowed call (its output passes unchanged)."""
        entry = self.running.pop(data.context.tool_call_id, None)
        if entry is not None:
            auth, started, fail_open = entry
            duration_ms = max(0.0, (time.perf_counter() - started) * 1000.0)
            self.gate.record_outcome(auth, OutcomeStatus.SUCCESS, None, duration_ms, fail_open)
        return ToolGuardrailFunctionOutput.allow()

    def _refuse(self, text: str, auth: Authorization | None) -> ToolGuardrailFunctionOutput:
        info = _info(auth) if auth is not None else {"refusal": text}
        if self.on_block == "raise":
            return ToolGuardrailFunctionOutput.raise_exception(output_info={**info, "refusal": text})
        return ToolGuardrailFunctionOutput.reject_content(text, output_info=info)


def _info(auth: Authorization) -> dict[str, Any]:
    """What the run's guardrail results show of a decision."""
    decision = auth.decision
    return {"request_id": str(decision.request_id), "decision": decision.decision.value,
            "reasons": list(decision.reasons), "determining": list(decision.determining)}
