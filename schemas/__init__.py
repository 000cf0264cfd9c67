"""The wire contract of sluicegate: versioned pydantic models, no I/O."""

from schemas.approval import ApprovalRequest, ApprovalVerdict, VerdictKind
from schemas.audit import AuditEventType, AuditRecord
from schemas.common import SCHEMA_VERSION, Action, DecisionKind, most_restrictive
from schemas.decision import Decision, Risk, RiskFactor
from schemas.intent import MAX_PARAMS_BYTES, Intent, TraceContext, intent_digest
from schemas.outcome import ExecutionOutcome, OutcomeStatus

__all__ = [
    "MAX_PARAMS_BYTES",
    "SCHEMA_VERSION",
    "Action",
    "ApprovalRequest",
    "ApprovalVerdict",
    "AuditEventType",
    "AuditRecord",
    "Decision",
    "DecisionKind",
    "ExecutionOutcome",
    "Intent",
    "OutcomeStatus",
    "Risk",
    "RiskFactor",
    "TraceContext",
    "VerdictKind",
    "intent_digest",
    "most_restrictive",
]
