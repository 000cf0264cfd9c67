"""The audit schema's migrations on the real engine: versioned, and a no-op when applied again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from clickhouse_connect.driver.client import Client

from consumers.audit_rows import COLUMNS, arrow_stream, row, to_arrow
from infra.clickhouse.migrate import DEFAULT_TTL_DAYS, load_migrations, migrate
from schemas import DecisionKind
from tests.consumers.records import decision_record, intent

pytestmark = pytest.mark.integration


def test_migrations_apply_once_then_are_a_no_op(clickhouse_client: Client, unique_name: str) -> None:
    versions = [m.version for m in load_migrations()]

    assert migrate(clickhouse_client, unique_name) == versions
    assert migrate(clickhouse_client, unique_name) == []
    assert migrate(clickhouse_client, unique_name, ttl_days=30, set_ttl=True) == []

    tables = str(clickhouse_client.command(f"SELECT arrayStringConcat(groupArray(name), ',') "
                                           f"FROM system.tables WHERE database = '{unique_name}'"))
    assert set(tables.split(",")) >= {"audit_events", "decision_events", "decisions_per_minute",
                                      "approval_latency", "schema_migrations", "decision_determining",
                                      "determining_per_minute"}
    for table in ("decisions_per_minute", "determining_per_minute"):
        ttl = str(clickhouse_client.command(f"SHOW CREATE TABLE {unique_name}.{table}"))
        assert "toIntervalDay(30)" in ttl


def test_determining_arrives_on_a_database_holding_older_decisions(
    clickhouse_client: Client, unique_name: str,
) -> None:
    """0003 on a database migrated before it: older rows read as empty, new ones are rolled up."""
    db = unique_name
    clickhouse_client.command(f"CREATE DATABASE {db}")
    for migration in load_migrations():
        if migration.version < 3:
            for statement in migration.statements(db, DEFAULT_TTL_DAYS):
                clickhouse_client.command(statement)
    at = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)  # well within the TTL
    before = row(decision_record(intent(at), DecisionKind.BLOCK), ("t", 0, 0))
    later = ["determining", *(c for c in COLUMNS if c.startswith("chain_"))]  # columns of 0003 and 0004
    older = pa.Table.from_batches([to_arrow([before])]).drop_columns(later)  # as stored before 0003
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, older.schema) as writer:
        writer.write_table(older)
    clickhouse_client.raw_insert(f"{db}.audit_events", older.column_names, bytes(sink.getvalue()),
                                 fmt="ArrowStream")
    clickhouse_client.command(f"CREATE TABLE {db}.schema_migrations (version UInt32, name String, "
                              f"checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
                              f"ENGINE = ReplacingMergeTree ORDER BY version")
    clickhouse_client.command(f"INSERT INTO {db}.schema_migrations (version, name, checksum) "
                              f"VALUES (1, 'a', ''), (2, 'b', '')")

    assert migrate(clickhouse_client, db)[0] == 3  # and every later one

    newer = row(decision_record(intent(at + timedelta(minutes=1)), DecisionKind.BLOCK,
                                determining=("per-agent",)), ("t", 0, 1))
    clickhouse_client.raw_insert(f"{db}.audit_events", list(COLUMNS), arrow_stream([to_arrow([newer])]),
                                 fmt="ArrowStream")
    sql = f"SELECT determining FROM {db}.audit_events ORDER BY event_time"
    stored = clickhouse_client.query(sql).result_rows
    assert [list(r[0]) for r in stored] == [[], ["per-agent"]]
    rolled = clickhouse_client.query(f"SELECT determining, sum(decisions) FROM {db}.determining_per_minute "
                                     "GROUP BY determining").result_rows
    assert [(list(d), int(n)) for d, n in rolled] == [(["per-agent"], 1)]
