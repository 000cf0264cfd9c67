"""Audit messages -> rows of ``audit_events``: validated once, built as tuples, shipped as Arrow.

:func:`decode_batch` is the sink's hot path and runs in decoder processes: it validates every
message with the wire models (``model_validate_json`` on the raw bytes), turns each valid one into
a row tuple, transposes the rows into columns and returns them as one Arrow IPC stream, with the
messages that could not be decoded and why. Only bytes cross the process boundary. The rows
themselves are built by :mod:`consumers.audit_columns`, which the workers share to hash them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import pyarrow as pa
from pydantic import ValidationError

from consumers.audit_columns import COLUMNS as COLUMNS
from consumers.audit_columns import row as row
from schemas import AuditRecord

_MS = pa.timestamp("ms", tz="UTC")
_TEXT = pa.string()
_TEXTS = pa.list_(_TEXT)
SCHEMA: Final = pa.schema([
    ("event_id", _TEXT), ("event_type", _TEXT), ("event_time", _MS), ("request_id", _TEXT),
    ("agent_id", _TEXT), ("agent_role", _TEXT), ("agent_owner", _TEXT), ("environment", _TEXT),
    ("tool", _TEXT), ("action", _TEXT), ("target", _TEXT), ("params", _TEXT),
    ("labels", pa.map_(_TEXT, _TEXT)), ("occurred_at", _MS), ("traceparent", _TEXT),
    ("policy_name", _TEXT), ("policy_version", _TEXT), ("decision", _TEXT), ("decision_final", pa.bool_()),
    ("reasons", _TEXTS), ("rules", _TEXTS), ("determining", _TEXTS), ("risk_score", pa.float64()),
    ("risk_factors", pa.map_(_TEXT, pa.float64())),
    ("approver_group", _TEXT), ("approval_quorum", pa.uint32()), ("approval_requested_at", _MS),
    ("approval_deadline_at", _MS), ("approved_by", _TEXTS),
    ("reviewer", _TEXT), ("verdict", _TEXT), ("verdict_reason", _TEXT), ("verdict_source", _TEXT),
    ("verdict_at", _MS), ("outcome_status", _TEXT), ("outcome_error", _TEXT),
    ("outcome_duration_ms", pa.float64()), ("fail_open", pa.bool_()), ("note", _TEXT),
    ("source_topic", _TEXT), ("source_partition", pa.uint32()), ("source_offset", pa.uint64()),
    ("chain_id", _TEXT), ("chain_seq", pa.uint64()), ("chain_prev", _TEXT), ("chain_hash", _TEXT),
    ("chain_signature", _TEXT),
])
"""Inserted columns of ``audit_events`` (:data:`consumers.audit_columns.COLUMNS`) and their Arrow types."""
assert tuple(SCHEMA.names) == COLUMNS
EVENT_TIME_RANGE: Final = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
"""Event times the table keeps: its partitions and TTL use ``DateTime``, which wraps after Feb 2106 (the
row would be stored under a wrong month, or dropped at once as expired), less the TTL's days."""


class DecodeError(ValueError):
    """A message that is not a valid AuditRecord; carries the reason."""


class Messages(NamedTuple):
    """Consumed messages as parallel columns (cheap to send to a decoder process: no object per message)."""

    topics: list[str]
    partitions: list[int]
    offsets: list[int]
    values: list[bytes | None]

    def slice(self, start: int, stop: int) -> Messages:
        """Messages ``start`` to ``stop`` (exclusive)."""
        return Messages(self.topics[start:stop], self.partitions[start:stop], self.offsets[start:stop],
                        self.values[start:stop])


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """The rows of a batch as an Arrow IPC stream, and the messages that could not be decoded."""

    arrow: bytes
    rows: int
    errors: tuple[tuple[int, str], ...]
    """(index of the message in the batch, why it could not be decoded)."""


def decode(value: bytes | None) -> AuditRecord:
    """Parse one message value of the audit topic (agents' outcomes reach it as audit records, through a
    worker: :mod:`streams.runtime.outcomes`)."""
    if value is None:
        raise DecodeError("empty message (tombstone)")
    try:
        return AuditRecord.model_validate_json(value)
    except ValidationError as exc:
        raise DecodeError(f"invalid AuditRecord: {exc}") from exc


def to_arrow(rows: Sequence[tuple[Any, ...]]) -> pa.RecordBatch:
    """Rows (``COLUMNS`` order) as one Arrow record batch."""
    columns: Iterable[Sequence[Any]] = zip(*rows, strict=True) if rows else ([] for _ in COLUMNS)
    return pa.RecordBatch.from_arrays(
        [pa.array(column, type=field.type) for column, field in zip(columns, SCHEMA, strict=True)],
        schema=SCHEMA)


def arrow_stream(batches: Iterable[pa.RecordBatch]) -> bytes:
    """Record batches as one Arrow IPC stream (what ClickHouse reads as ``FORMAT ArrowStream``)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, SCHEMA) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return bytes(sink.getvalue())


def _storable(rows: list[tuple[Any, ...]], indices: list[int],
              errors: list[tuple[int, str]]) -> pa.RecordBatch:
    """The rows as Arrow; a row Arrow cannot hold (valid on the wire, yet out of a column's range)
    joins ``errors`` instead of failing the batch, and so does every other such row."""
    try:
        return to_arrow(rows)
    except (pa.ArrowException, OverflowError, ValueError, TypeError):
        kept = []
        for index, candidate in zip(indices, rows, strict=True):
            try:
                to_arrow([candidate])
            except (pa.ArrowException, OverflowError, ValueError, TypeError) as exc:
                errors.append((index, f"cannot be stored: {exc}"))
            else:
                kept.append(candidate)
        return to_arrow(kept)


def decode_batch(messages: Messages) -> DecodedBatch:
    """Validate and convert a batch of messages; undecodable ones are reported, never raised."""
    rows: list[tuple[Any, ...]] = []
    indices: list[int] = []
    errors: list[tuple[int, str]] = []
    for index, (topic, partition, offset, value) in enumerate(zip(*messages, strict=True)):
        try:
            record = decode(value)
        except DecodeError as exc:
            errors.append((index, str(exc)))
            continue
        at = record.event_time
        if not EVENT_TIME_RANGE[0] <= at < EVENT_TIME_RANGE[1]:
            errors.append((index, f"cannot be stored: event time {at.isoformat()} is outside "
                                  f"{EVENT_TIME_RANGE[0].year}-{EVENT_TIME_RANGE[1].year - 1}"))
            continue
        rows.append(row(record, (topic, partition, offset)))
        indices.append(index)
    batch = _storable(rows, indices, errors)
    return DecodedBatch(arrow_stream([batch]), batch.num_rows, tuple(sorted(errors)))
