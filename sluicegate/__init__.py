"""sluicegate: the agent-facing SDK (``Gate``, ``SyncGate``, ``guard``, exceptions) and the command line."""

from schemas.decision import GOVERNANCE_UNAVAILABLE
from sluicegate.breaker import Backoff, BreakerState, CircuitBreaker
from sluicegate.errors import (
    ActionBlocked,
    ApprovalDenied,
    ApprovalExpired,
    GateNotStarted,
    GovernanceUnavailable,
    InvalidCredential,
    InvalidIntent,
    SluicegateError,
)
from sluicegate.gate import Gate
from sluicegate.guard import Authorization
from sluicegate.identity import AgentIdentity
from sluicegate.routing import partition_for
from sluicegate.settings import Settings
from sluicegate.sync import SyncGate
from sluicegate.trust import AgentCredential

__all__ = [
    "GOVERNANCE_UNAVAILABLE",
    "ActionBlocked",
    "AgentCredential",
    "AgentIdentity",
    "ApprovalDenied",
    "ApprovalExpired",
    "Authorization",
    "Backoff",
    "BreakerState",
    "CircuitBreaker",
    "Gate",
    "GateNotStarted",
    "GovernanceUnavailable",
    "InvalidCredential",
    "InvalidIntent",
    "Settings",
    "SluicegateError",
    "SyncGate",
    "partition_for",
]
