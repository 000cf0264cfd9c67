"""The wire contract of sluicegate: versioned pydantic models, no I/O."""

from schemas.approval import ApprovalRequest, ApprovalVerdict, VerdictKind
from schemas.audit import AuditEventType, AuditRecord
from schemas.common import SCHEMA_VERSION, Action, DecisionKind, most_restrictive
from schemas.decision import Decision, Risk, RiskFactor
from schemas.intent import MAX_PARAMS_BYTES, Intent, TraceContext, intent_digest
from schemas.outcome import ExecutionOutcome, OutcomeStatus
from schemas.topics import ACTIVE_POLICY_KEY, TopicNames

__all__ = [
    "ACTIVE_POLICY_KEY",
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
    "TopicNames",
    "TraceContext",
    "VerdictKind",
    "intent_digest",
    "most_restrictive",
]
