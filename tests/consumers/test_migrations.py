"""The audit schema's migrations on the real engine: versioned, and a no-op when applied again."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.client import Client

from infra.clickhouse.migrate import load_migrations, migrate

pytestmark = pytest.mark.integration


def test_migrations_apply_once_then_are_a_no_op(clickhouse_client: Client, unique_name: str) -> None:
    versions = [m.version for m in load_migrations()]

    assert migrate(clickhouse_client, unique_name) == versions
    assert migrate(clickhouse_client, unique_name) == []
    assert migrate(clickhouse_client, unique_name, ttl_days=30, set_ttl=True) == []

    tables = str(clickhouse_client.command(f"SELECT arrayStringConcat(groupArray(name), ',') "
                                           f"FROM system.tables WHERE database = '{unique_name}'"))
    assert set(tables.split(",")) >= {"audit_events", "decision_events", "decisions_per_minute",
                                      "approval_latency", "schema_migrations"}
    ttl = str(clickhouse_client.command(f"SHOW CREATE TABLE {unique_name}.decisions_per_minute"))
    assert "toIntervalDay(30)" in ttl
