"""The least-privilege users of a ClickHouse server: their DDL everywhere; on a server (when
``SLUICEGATE_CLICKHOUSE_URL`` names one), what each may and may not do."""

from __future__ import annotations

import secrets

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from typer.testing import CliRunner

from infra.clickhouse.users import create_users, user_statements
from sluicegate.cli import _register, app


def test_the_sink_inserts_and_the_reader_reads_only() -> None:
    sql = user_statements("audit", "sink", "s" * 16, "reader", "r" * 16)
    assert "GRANT INSERT ON audit.audit_events TO sink" in sql
    assert not any("SELECT ON audit.*" in s and "sink" in s for s in sql)
    assert any(s.startswith("CREATE USER IF NOT EXISTS reader") and s.endswith("SETTINGS readonly = 1")
               for s in sql)
    assert [s for s in sql if "TO reader" in s] == ["GRANT SELECT ON audit.* TO reader"]
    with pytest.raises(ValueError):
        user_statements("audit", "sink", "short", "reader", "r" * 16)
    with pytest.raises(ValueError):
        user_statements("audit", "sink", "x' OR '1'='1 --", "reader", "r" * 16)


def test_the_command_never_prints_the_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICEGATE_CLICKHOUSE_SINK_PASSWORD", "sink-password-1234")
    monkeypatch.setenv("SLUICEGATE_CLICKHOUSE_READER_PASSWORD", "reader-password-1234")
    _register()
    result = CliRunner().invoke(app, ["audit", "users"])
    assert result.exit_code == 0, result.output
    assert "GRANT INSERT ON sluicegate.audit_events TO sluicegate_sink" in result.output
    assert "password-1234" not in result.output


@pytest.mark.integration
def test_on_a_server_each_user_can_do_only_its_part(clickhouse_url: str, clickhouse_client: Client,
                                                     audit_db: str) -> None:
    if not clickhouse_url.startswith(("http://", "https://")):
        pytest.skip("users need a ClickHouse server (SLUICEGATE_CLICKHOUSE_URL=http://...)")
    sink, reader, password = f"s{audit_db}", f"r{audit_db}", secrets.token_urlsafe(16)
    create_users(clickhouse_client, audit_db, sink, password, reader, password)
    host = clickhouse_client.url.split("//")[1].split("@")[-1].split(":")[0]  # type: ignore[attr-defined]
    port = int(clickhouse_client.url.rsplit(":", 1)[1].strip("/"))  # type: ignore[attr-defined]
    as_reader = clickhouse_connect.get_client(host=host, port=port, username=reader, password=password)
    as_sink = clickhouse_connect.get_client(host=host, port=port, username=sink, password=password)
    assert as_reader.query(f"SELECT count() FROM {audit_db}.audit_events").result_rows == [(0,)]
    for client, sql in ((as_reader, f"INSERT INTO {audit_db}.audit_events (event_id) VALUES ('x')"),
                        (as_reader, f"DROP TABLE {audit_db}.audit_events"),
                        (as_sink, f"SELECT count() FROM {audit_db}.approval_latency"),
                        (as_sink, f"ALTER TABLE {audit_db}.audit_events DELETE WHERE 1")):
        with pytest.raises(Exception, match=r"(?i)readonly|not enough privileges|ACCESS_DENIED"):
            client.command(sql)
