"""Decoding a batch of audit messages into Arrow rows: pure logic, no broker or engine."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from consumers.audit_rows import COLUMNS, Messages, _storable, decode_batch, row
from schemas import DecisionKind
from streams.runtime.outcomes import outcome_record
from tests.consumers.records import decision_record, intent, outcome

AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def test_a_batch_keeps_the_valid_messages_and_reports_the_others_by_index() -> None:
    """Decisions and agents' outcomes (audited by a worker) alike; junk and tombstones reported."""
    asked = intent(AT)
    decision = decision_record(asked, DecisionKind.BLOCK, risk=0.5)
    reported = outcome_record(outcome(asked))
    messages = Messages(
        ["t.audit"] * 4, [0, 0, 1, 1], [7, 8, 3, 4],
        [decision.model_dump_json().encode(), b"not json", reported.model_dump_json().encode(), None])

    decoded = decode_batch(messages)

    assert decoded.rows == 2
    assert [index for index, _ in decoded.errors] == [1, 3]
    assert "invalid AuditRecord" in decoded.errors[0][1] and "tombstone" in decoded.errors[1][1]
    table = pa.ipc.open_stream(decoded.arrow).read_all()
    assert table.column_names == list(COLUMNS)
    stored = table.to_pylist()
    assert [r["event_type"] for r in stored] == ["decision", "outcome"]
    assert stored[0]["decision"] == "BLOCK" and stored[0]["action"] == "create"
    assert stored[0]["request_id"] == asked.request_id.hex
    assert stored[1]["event_id"] == reported.event_id and stored[1]["agent_id"] == asked.agent_id
    assert (stored[1]["source_topic"], stored[1]["source_partition"], stored[1]["source_offset"]) == (
        "t.audit", 1, 3)


def test_a_row_arrow_cannot_hold_is_reported_without_failing_the_batch() -> None:
    good = row(decision_record(intent(AT), DecisionKind.ALLOW), ("t.audit", 0, 1))
    bad = (*good[:-1], -1)  # an offset no uint64 column holds
    errors: list[tuple[int, str]] = []

    batch = _storable([good, bad, good], [0, 1, 2], errors)

    assert batch.num_rows == 2
    assert [index for index, _ in errors] == [1] and "cannot be stored" in errors[0][1]


def test_an_event_time_the_table_cannot_keep_is_reported_not_stored() -> None:
    far = decision_record(intent(datetime(2400, 1, 1, tzinfo=UTC)), DecisionKind.ALLOW)
    near = decision_record(intent(AT), DecisionKind.ALLOW)
    messages = Messages(["t.audit", "t.audit"], [0, 0], [1, 2],
                        [far.model_dump_json().encode(), near.model_dump_json().encode()])

    decoded = decode_batch(messages)

    assert decoded.rows == 1
    [(index, why)] = decoded.errors
    assert index == 0 and why.startswith("cannot be stored: event time 2400-01-01") and "1970-2099" in why
