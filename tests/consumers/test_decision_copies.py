"""A decision audited twice with different event times (a stalled worker's late copy and the new owner's
decision of the same intent) is counted once by the views reports read, also across a minute boundary
(migration 0006; chaos run K: audit_extra 2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from clickhouse_connect.driver.client import Client

from schemas import DecisionKind
from tests.consumers.conftest import Store
from tests.consumers.records import decision_record, intent

pytestmark = pytest.mark.integration


def _count(client: Client, db: str, table: str, column: str = "count()") -> int:
    return int(str(client.command(f"SELECT {column} FROM {db}.{table}")))


@pytest.mark.parametrize("later", [True, False], ids=["copy-later", "copy-earlier"])
def test_copies_of_a_decision_in_two_minutes_are_counted_once(
    clickhouse_client: Client, audit_db: str, store_records: Store, later: bool,
) -> None:
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    of = intent(minute + timedelta(seconds=55))
    first = decision_record(of, DecisionKind.ALLOW, after=timedelta(milliseconds=400))  # :55.4
    copy = decision_record(of, DecisionKind.ALLOW, after=timedelta(seconds=7))  # :02 of the next minute
    other = decision_record(intent(minute + timedelta(seconds=58)), DecisionKind.BLOCK)

    store_records([first] if later else [copy])
    store_records([copy, other] if later else [first, other])

    assert first.event_id == copy.event_id
    assert first.event_time.minute != copy.event_time.minute
    assert _count(clickhouse_client, audit_db, "decision_events") == 2  # the decision once, and the other
    assert _count(clickhouse_client, audit_db, "decision_determining") == 2
    assert _count(clickhouse_client, audit_db, "decisions_per_minute", "sum(decisions)") == 2
