"""``SyncGate``: the Gate for agents that are not async; it runs a Gate on its own loop in a thread.

```python
with SyncGate(settings) as gate:   # SLUICEGATE_AGENT_CREDENTIAL, or credential=AgentCredential.parse(...)
    decision = gate.check(tool="services.scale", action="update", target="services:api")

    @gate.guard(tool="services.scale", action="update", target="services:api")
    def scale(replicas: int) -> None: ...
```
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from concurrent.futures import Future
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

from schemas import Action, Decision, Intent, OutcomeStatus
from sluicegate.errors import GateNotStarted
from sluicegate.gate import Gate
from sluicegate.guard import Authorization, BlockingGuard, GuardBinding, ParamsSpec, TargetSpec
from sluicegate.identity import AgentIdentity
from sluicegate.settings import Settings

T = TypeVar("T")


class SyncGate:
    """Blocking ``check()`` and ``guard()`` over an async ``Gate`` running in a daemon thread."""

    def __init__(self, settings: Settings | str, **gate_options: Any) -> None:
        self.gate = Gate(settings, **gate_options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the gate's thread and connect (see ``Gate.start``)."""
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="sluicegate-gate", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        self._call(self.gate.start())

    def stop(self) -> None:
        """Flush outcomes and audit records, disconnect, end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call(self.gate.stop())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def check(
        self,
        *,
        tool: str,
        action: Action | str,
        target: str,
        params: Mapping[str, Any] | None = None,
        occurred_at: datetime | None = None,
        agent_id: str | None = None,
        agent_role: str | None = None,
        environment: str | None = None,
        owner: str | None = None,
        labels: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Decision:
        """Blocking ``Gate.check``."""
        return self._call(self.gate.check(
            tool=tool, action=action, target=target, params=params, occurred_at=occurred_at,
            agent_id=agent_id, agent_role=agent_role, environment=environment, owner=owner,
            labels=labels, timeout_s=timeout_s,
        ))

    def authorize(self, intent: Intent) -> Authorization:
        """Blocking ``Gate.authorize``."""
        return self._call(self.gate.authorize(intent))

    def guard(
        self,
        *,
        tool: str,
        action: Action | str,
        target: TargetSpec,
        params: ParamsSpec = None,
        fail_open: bool = False,
        agent_id: str | None = None,
        agent_role: str | None = None,
        environment: str | None = None,
        owner: str | None = None,
    ) -> BlockingGuard:
        """Like ``Gate.guard``; a sync tool stays a plain function."""
        agent = AgentIdentity(agent_id, agent_role, environment, owner)
        if agent.given:
            self.gate.resolve_identity(agent)
        spec = Gate.guard_spec(tool, action, target, params, fail_open, agent)
        binding = GuardBinding(
            make_intent=self.gate.guard_intent,
            authorize=self._authorize_async,
            authorize_blocking=self.authorize,
            fail_open=self._record_fail_open,
            outcome=self._record_outcome,
        )
        return BlockingGuard(binding, spec)

    async def _authorize_async(self, intent: Intent) -> Authorization:
        return await asyncio.wrap_future(self._submit(self.gate.authorize(intent)))

    def _record_fail_open(self, auth: Authorization) -> None:
        self._running_loop().call_soon_threadsafe(self.gate.record_fail_open, auth)

    def _record_outcome(
        self,
        auth: Authorization,
        status: OutcomeStatus,
        error: str | None,
        duration_ms: float,
        fail_open: bool,
    ) -> None:
        self._running_loop().call_soon_threadsafe(
            self.gate.record_outcome, auth, status, error, duration_ms, fail_open
        )

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise GateNotStarted("the SyncGate is not started: use `with SyncGate(...)` or .start()")
        return self._loop

    def _submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        try:
            loop = self._running_loop()
            if threading.current_thread() is self._thread:
                raise RuntimeError("SyncGate called from its own thread: use the async Gate there")
        except BaseException:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._submit(coro).result()
