"""The SDK's exceptions: one root, each error carrying the request it is about.

```
SluicegateError
├── ActionBlocked               the tool did not run; ``.decision`` says why
│   ├── GovernanceUnavailable   no usable decision (broker down, timeout, bad reply, breaker open,
│   │                           or replies that do not verify: those never let a fail_open tool run)
│   ├── ApprovalDenied          a reviewer refused the pending approval
│   └── ApprovalExpired         no final decision before the approval deadline
├── InvalidIntent               the call cannot become a valid intent, or claims an identity its
│                               credential does not give (also a ValueError)
├── InvalidCredential           an agent credential that cannot be read or used (also a ValueError)
└── GateNotStarted              ``check`` before ``start`` / after ``stop`` (also a RuntimeError)
```
"""

from __future__ import annotations

from uuid import UUID

from schemas import Decision


class SluicegateError(Exception):
    """Root of every exception the SDK raises on purpose."""

    def __init__(self, message: str, *, request_id: UUID | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class ActionBlocked(SluicegateError):
    """The guarded tool did not run because the (final) decision was not ALLOW."""

    def __init__(self, decision: Decision, tool: str = "") -> None:
        self.decision = decision
        self.tool = tool
        what = f"{tool!r} " if tool else ""
        reasons = "; ".join(decision.reasons) or "no reason given"
        super().__init__(
            f"action {what}blocked ({decision.decision.value}, request {decision.request_id}): {reasons}",
            request_id=decision.request_id,
        )

    @property
    def reasons(self) -> tuple[str, ...]:
        """The decision's reasons, as the agent should report them."""
        return self.decision.reasons

    @property
    def rules(self) -> tuple[str, ...]:
        """Ids of the rules and limits that applied."""
        return self.decision.rules

    @property
    def policy_version(self) -> str:
        """Content hash of the policy that decided (empty when no policy did)."""
        return self.decision.policy_version


class GovernanceUnavailable(ActionBlocked):
    """No usable decision was obtained in time: fail closed."""


class ApprovalDenied(ActionBlocked):
    """The action needed an approval and it was refused."""


class ApprovalExpired(ActionBlocked):
    """The action needed an approval and none arrived before the deadline."""


class InvalidIntent(SluicegateError, ValueError):
    """The guarded call's fields do not make a valid intent (bad target, params too large, an agent
    role, environment or owner other than its credential's, an agent this gate holds no credential for)."""


class InvalidCredential(SluicegateError, ValueError):
    """An agent credential that cannot be read, or credentials that contradict each other."""


class GateNotStarted(SluicegateError, RuntimeError):
    """The gate is not running: use ``async with Gate(...)`` or ``await gate.start()``."""
