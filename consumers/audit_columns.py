"""An audit record as the row ``audit_events`` stores, and the hash that chains it: no Arrow, no I/O.

The worker (which chains records as it writes them) and ``sluicegate audit verify`` (which recomputes
the chains from ClickHouse) must hash the same thing, so the hash covers the *stored* values of the
columns in :data:`HASHED`, normalised by :func:`canonical` (times as integer ms, maps as sorted pairs):
what the worker computes from the record equals what the verifier computes from the row it reads back.
Everything a row says about the event is covered; not covered are where the sink read it
(``source_*``), when it was stored (``ingested_at``, ``version``) and a checkpoint's own fields.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import NAMESPACE_URL, UUID, uuid5

from pydantic_core import to_json

from schemas import AuditRecord

COLUMNS: Final = (
    "event_id", "event_type", "event_time", "request_id", "agent_id", "agent_role", "agent_owner",
    "environment", "tool", "action", "target", "params", "labels", "occurred_at", "traceparent",
    "policy_name", "policy_version", "decision", "decision_final", "reasons", "rules", "determining",
    "risk_score", "risk_factors", "approver_group", "approval_quorum", "approval_requested_at",
    "approval_deadline_at", "approved_by", "reviewer", "verdict", "verdict_reason", "verdict_source",
    "verdict_at", "outcome_status", "outcome_error", "outcome_duration_ms", "fail_open", "note",
    "source_topic", "source_partition", "source_offset",
    "chain_id", "chain_seq", "chain_prev", "chain_hash", "chain_signature",
)
"""Inserted columns of ``audit_events`` (``ingested_at`` and ``version`` are filled by ClickHouse)."""
TIMES: Final = frozenset({"event_time", "occurred_at", "approval_requested_at", "approval_deadline_at",
                          "verdict_at"})
FLOATS: Final = frozenset({"risk_score", "outcome_duration_ms"})
BOOLS: Final = frozenset({"decision_final", "fail_open"})
HASHED: Final = tuple(c for c in COLUMNS if not c.startswith("source_")
                      and c not in ("chain_prev", "chain_hash", "chain_signature"))
"""The columns a chained record's hash covers (its link to the previous record is the hash's other input)."""
GENESIS: Final = "0" * 64
"""The ``prev`` of a chain's first record."""
_HASHED_INDEX: Final = tuple(COLUMNS.index(c) for c in HASHED)
_MAX_QUORUM: Final = 2**32 - 1
_NO_DECISION: Final[tuple[Any, ...]] = ("", "", "", False, (), (), (), 0.0, {})
_NO_APPROVAL: Final[tuple[Any, ...]] = ("", 0, None, None, (), "", "", "", "", None)
_NO_OUTCOME: Final[tuple[Any, ...]] = ("", "", None, False)
_NO_CHAIN: Final[tuple[Any, ...]] = ("", 0, "", "", "")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


def _chain(record: AuditRecord) -> tuple[Any, ...]:
    if record.chain is not None:
        return record.chain.chain_id, record.chain.seq, record.chain.prev, "", ""
    if record.checkpoint is not None:
        point = record.checkpoint
        return point.chain_id, point.seq, "", point.hash, point.signature
    return _NO_CHAIN


def row(record: AuditRecord, source: tuple[str, int, int]) -> tuple[Any, ...]:
    """One ``audit_events`` row, values in ``COLUMNS`` order; ``source`` is (topic, partition, offset).

    Enum members stand for their values (they are ``str``) and request ids are compact hex, which
    ClickHouse parses as UUID: cheaper than ``.value`` and ``str(uuid)`` on the hot path.
    """
    decision, request, verdict, out = record.decision, record.approval_request, record.verdict, record.outcome
    intent = record.intent or (request.intent if request is not None else None)
    if intent is not None:
        trace = intent.trace
        identity: tuple[Any, ...] = (
            intent.agent_id, intent.agent_role, intent.agent_owner or "", intent.environment, intent.tool,
            intent.action, intent.target, to_json(intent.params).decode(), intent.labels,
            intent.occurred_at, trace.traceparent if trace is not None else "")
    else:
        agent = (decision.agent_id if decision is not None else "") or (out.agent_id if out else "")
        identity = (agent, "", "", "", out.tool if out else "", "", "", "{}", {}, None, "")
    judged = decision if decision is not None else request
    if judged is None:
        judgement: tuple[Any, ...] = _NO_DECISION
    else:
        factors: dict[str, float] = {}
        for factor in judged.risk.factors:
            factors[factor.name] = factors.get(factor.name, 0.0) + factor.contribution
        kind, final = (decision.decision, decision.final) if decision else ("REQUIRE_APPROVAL", False)
        judgement = ("", judged.policy_version, kind, final,
                     judged.reasons, judged.rules, judged.determining, judged.risk.score, factors)
    if request is None and verdict is None and decision is None:
        approval: tuple[Any, ...] = _NO_APPROVAL
    else:
        deadline = request.deadline_at if request else (decision.approval_deadline_at if decision else None)
        approval = (
            request.approver_group if request else "", min(request.quorum, _MAX_QUORUM) if request else 0,
            request.created_at if request else None, deadline,
            decision.approved_by if decision else (),
            *((verdict.reviewer, verdict.verdict, verdict.reason or "", verdict.source,
               verdict.decided_at) if verdict else ("", "", "", "", None)))
    outcome = (out.status, out.error or "", out.duration_ms, out.fail_open) if out else _NO_OUTCOME
    return (record.event_id, record.event_type, record.event_time, record.request_id.hex,
            *identity, *judgement, *approval, *outcome, record.note or "", *source, *_chain(record))


def _time(value: Any) -> Any:
    return value if value is None or isinstance(value, int) else (value - _EPOCH) // _MS


def _float(value: Any) -> Any:
    return None if value is None else float(value)


def _texts(value: Any) -> Any:
    return [str(v) for v in value]


def _labels(value: Any) -> Any:
    return sorted([str(k), str(v)] for k, v in value.items())


def _factors(value: Any) -> Any:
    return sorted([str(k), float(v)] for k, v in value.items())


def _uuid(value: Any) -> Any:
    return value.hex if isinstance(value, UUID) else value


_CONVERT: Final[dict[str, Callable[[Any], Any]]] = {
    **dict.fromkeys(TIMES, _time), **dict.fromkeys(FLOATS, _float), **dict.fromkeys(BOOLS, bool),
    "reasons": _texts, "rules": _texts, "determining": _texts, "approved_by": _texts,
    "labels": _labels, "risk_factors": _factors, "request_id": _uuid,
}
_PLAIN: Final = tuple((index, _CONVERT.get(column)) for index, column in enumerate(HASHED))


def canonical(values: Sequence[Any]) -> bytes:
    """The bytes a record's hash covers: the :data:`HASHED` values, in that order, in canonical form
    (times as integer ms, maps as sorted pairs), as compact JSON."""
    if len(values) != len(HASHED):
        raise ValueError(f"{len(values)} values for {len(HASHED)} hashed columns")
    return to_json([values[i] if convert is None else convert(values[i]) for i, convert in _PLAIN])


def link(prev: str, values: Sequence[Any]) -> str:
    """A chained record's hash: SHA-256 over the previous record's hash and :func:`canonical` ``values``."""
    return hashlib.sha256(bytes.fromhex(prev) + canonical(values)).hexdigest()


def hashed_values(row_values: Sequence[Any]) -> list[Any]:
    """The :data:`HASHED` values of a full row (``COLUMNS`` order)."""
    return [row_values[i] for i in _HASHED_INDEX]


def checkpoint_message(chain_id: str, seq: int, digest: str) -> bytes:
    """What a checkpoint's signature covers (a prefix no approval request, a JSON object, can have)."""
    return f"sluicegate-audit-checkpoint/v1\n{chain_id}\n{seq}\n{digest}".encode()


def chain_request_id(chain_id: str) -> UUID:
    """The request id a chain's checkpoints are filed under (they answer no request)."""
    return uuid5(NAMESPACE_URL, f"sluicegate:audit-chain:{chain_id}")
