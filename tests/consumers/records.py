"""Audit records for tests and benchmarks: decisions, approvals and outcomes with chosen values."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID, uuid4

from schemas import (
    Action,
    ApprovalRequest,
    ApprovalVerdict,
    AuditEventType,
    AuditRecord,
    Decision,
    DecisionKind,
    ExecutionOutcome,
    Intent,
    OutcomeStatus,
    Risk,
    RiskFactor,
    VerdictKind,
)


def intent(at: datetime, *, agent: str = "agent-1", tool: str = "payments.refund", amount: float = 10.0,
           target: str = "payments:refunds", action: Action = Action.CREATE,
           request_id: UUID | None = None) -> Intent:
    """One intent of a support agent."""
    return Intent(request_id=request_id or uuid4(), agent_id=agent, agent_role="support",
                  environment="production", tool=tool, action=action, target=target,
                  params={"amount": amount}, occurred_at=at)


def decision_record(of: Intent, kind: DecisionKind, *, risk: float = 0.0, rules: tuple[str, ...] = ("r1",),
                    determining: tuple[str, ...] = (), factors: dict[str, float] | None = None,
                    final: bool = True, after: timedelta = timedelta(milliseconds=5)) -> AuditRecord:
    """The decision event of an intent."""
    decided = of.occurred_at + after
    decision = Decision(
        request_id=of.request_id, agent_id=of.agent_id, decision=kind, reasons=(f"{kind} by rules",),
        rules=rules, determining=determining, policy_version="sha256:0123456789abcdef", decided_at=decided,
        final=final,
        risk=Risk(score=risk, factors=tuple(RiskFactor(name=n, contribution=c)
                                            for n, c in (factors or {}).items())),
    )
    return AuditRecord(event_id=f"decision:{of.request_id}:{int(final)}", event_type=AuditEventType.DECISION,
                       event_time=decided, request_id=of.request_id, intent=of, decision=decision)


def approval_requested(of: Intent, *, timeout: timedelta = timedelta(minutes=15)) -> AuditRecord:
    """The approval request of an intent, created when it was decided."""
    request = ApprovalRequest(request_id=of.request_id, intent=of, intent_digest=of.digest(),
                              approver_group="reviewers", created_at=of.occurred_at,
                              deadline_at=of.occurred_at + timeout)
    return AuditRecord(event_id=f"approval:{of.request_id}", event_type=AuditEventType.APPROVAL_REQUESTED,
                       event_time=of.occurred_at, request_id=of.request_id, approval_request=request)


def verdict_accepted(of: Intent, after: timedelta, *, reviewer: str = "alice",
                     verdict: VerdictKind = VerdictKind.APPROVE) -> AuditRecord:
    """A reviewer's accepted verdict, ``after`` the request."""
    at = of.occurred_at + after
    answer = ApprovalVerdict(request_id=of.request_id, intent_digest=of.digest(), reviewer=reviewer,
                             verdict=verdict, reason="ok", decided_at=at)
    return AuditRecord(event_id=f"verdict:{of.request_id}:{reviewer}",
                       event_type=AuditEventType.VERDICT_ACCEPTED, event_time=at,
                       request_id=of.request_id, verdict=answer)


def outcome(of: Intent, *, status: OutcomeStatus = OutcomeStatus.SUCCESS) -> ExecutionOutcome:
    """What happened when the intent's tool ran."""
    return ExecutionOutcome(request_id=of.request_id, agent_id=of.agent_id, tool=of.tool, status=status,
                            error=None if status is OutcomeStatus.SUCCESS else "boom", duration_ms=12.5,
                            finished_at=of.occurred_at + timedelta(seconds=1))
