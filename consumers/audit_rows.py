"""AuditRecord / ExecutionOutcome -> one row of ``audit_events``, accumulated column by column."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError

from schemas import AuditEventType, AuditRecord, ExecutionOutcome, Intent

COLUMNS: Final = (
    "event_id", "event_type", "event_time", "request_id",
    "agent_id", "agent_role", "agent_owner", "environment", "tool", "action", "target",
    "params", "labels", "occurred_at", "traceparent",
    "policy_name", "policy_version", "decision", "decision_final", "reasons", "rules",
    "risk_score", "risk_factors",
    "approver_group", "approval_quorum", "approval_requested_at", "approval_deadline_at", "approved_by",
    "reviewer", "verdict", "verdict_reason", "verdict_source", "verdict_at",
    "outcome_status", "outcome_error", "outcome_duration_ms", "fail_open", "note",
    "source_topic", "source_partition", "source_offset",
)
"""Inserted columns of ``audit_events``, in row order (``ingested_at`` is filled by ClickHouse)."""


class DecodeError(ValueError):
    """A message that is not a valid AuditRecord / ExecutionOutcome; carries the reason."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record was read from."""

    topic: str
    partition: int
    offset: int


def outcome_record(outcome: ExecutionOutcome) -> AuditRecord:
    """An outcome from the outcomes topic as an audit event with a deterministic id."""
    return AuditRecord(
        event_id=f"outcome:{outcome.request_id}",
        event_type=AuditEventType.FAIL_OPEN if outcome.fail_open else AuditEventType.OUTCOME,
        event_time=outcome.finished_at,
        request_id=outcome.request_id,
        outcome=outcome,
    )


def decode(value: bytes | None, *, outcome: bool) -> AuditRecord:
    """Parse one message value: an ExecutionOutcome when ``outcome``, else an AuditRecord."""
    if value is None:
        raise DecodeError("empty message (tombstone)")
    try:
        if outcome:
            return outcome_record(ExecutionOutcome.model_validate_json(value))
        return AuditRecord.model_validate_json(value)
    except ValidationError as exc:
        raise DecodeError(f"invalid {'ExecutionOutcome' if outcome else 'AuditRecord'}: {exc}") from exc


def _intent(record: AuditRecord) -> Intent | None:
    if record.intent is not None:
        return record.intent
    return record.approval_request.intent if record.approval_request is not None else None


def _identity(record: AuditRecord) -> list[Any]:
    intent = _intent(record)
    if intent is None:
        agent = record.decision.agent_id if record.decision else ""
        out = record.outcome
        return [agent or (out.agent_id if out else ""), "", "", "", out.tool if out else "",
                "", "", "{}", {}, None, ""]
    return [
        intent.agent_id, intent.agent_role, intent.agent_owner or "", intent.environment, intent.tool,
        intent.action.value, intent.target,
        json.dumps(intent.params, separators=(",", ":"), ensure_ascii=False, sort_keys=True),
        dict(intent.labels), intent.occurred_at, intent.trace.traceparent if intent.trace else "",
    ]


def _decision(record: AuditRecord) -> list[Any]:
    decision, request = record.decision, record.approval_request
    if decision is not None:
        risk, rules, reasons = decision.risk, decision.rules, decision.reasons
        version, kind, final = decision.policy_version, decision.decision.value, decision.final
    elif request is not None:
        risk, rules, reasons = request.risk, request.rules, request.reasons
        version, kind, final = request.policy_version, "REQUIRE_APPROVAL", False
    else:
        return ["", "", "", False, [], [], 0.0, {}]
    factors: dict[str, float] = {}
    for factor in risk.factors:
        factors[factor.name] = factors.get(factor.name, 0.0) + factor.contribution
    name = str(getattr(decision, "policy_name", "") or "")
    return [name, version, kind, final, list(reasons), list(rules), risk.score, factors]


def _approval(record: AuditRecord) -> list[Any]:
    request, verdict, decision = record.approval_request, record.verdict, record.decision
    deadline: datetime | None = request.deadline_at if request else None
    if deadline is None and decision is not None:
        deadline = decision.approval_deadline_at
    return [
        request.approver_group if request else "", request.quorum if request else 0,
        request.created_at if request else None, deadline,
        list(decision.approved_by) if decision else [],
        verdict.reviewer if verdict else "", verdict.verdict.value if verdict else "",
        (verdict.reason or "") if verdict else "", verdict.source if verdict else "",
        verdict.decided_at if verdict else None,
    ]


def _outcome(record: AuditRecord) -> list[Any]:
    out = record.outcome
    if out is None:
        return ["", "", None, False]
    return [out.status.value, out.error or "", out.duration_ms, out.fail_open]


def to_row(record: AuditRecord, source: Source) -> list[Any]:
    """One ``audit_events`` row, values in ``COLUMNS`` order."""
    return [
        record.event_id, record.event_type.value, record.event_time, record.request_id,
        *_identity(record), *_decision(record), *_approval(record), *_outcome(record),
        record.note or "", source.topic, source.partition, source.offset,
    ]


@dataclass(slots=True)
class ColumnBatch:
    """Rows accumulated column by column, ready for a columnar insert."""

    columns: list[list[Any]] = field(default_factory=lambda: [[] for _ in COLUMNS])

    def __len__(self) -> int:
        return len(self.columns[0])

    def append(self, row: list[Any]) -> None:
        """Add one row (values in ``COLUMNS`` order)."""
        for column, value in zip(self.columns, row, strict=True):
            column.append(value)

    def clear(self) -> None:
        """Forget every row."""
        for column in self.columns:
            column.clear()

