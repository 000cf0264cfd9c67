"""Read-only where the query runs: the sink's query endpoint (and the CLI's own store) on the embedded
engine refuse anything that is not a read, whatever the text, and the audit stays as it was."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from clickhouse_connect.driver.client import Client

from consumers.audit_store import ClientStore, EndpointStore, QueryServer, StoreError
from infra.clickhouse.client import is_embedded

pytestmark = pytest.mark.integration
WRITES = [
    "INSERT INTO {db}.audit_events (event_id) VALUES ('forged')",
    "DROP TABLE {db}.audit_events",
    "ALTER TABLE {db}.audit_events DELETE WHERE 1",
    "SELECT 1; DROP TABLE {db}.audit_events",
    "WITH 1 AS x SELECT x SETTINGS readonly = 0",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')",
    "TRUNCATE TABLE {db}.audit_events",
    "OPTIMIZE TABLE {db}.audit_events FINAL",
    "CREATE TABLE {db}.x (a UInt8) ENGINE = Memory",
]


@pytest.fixture
def endpoint(clickhouse_client: Client) -> Iterator[EndpointStore]:
    if not is_embedded(clickhouse_client):
        pytest.skip("the sink's query endpoint serves the embedded engine only")
    server = QueryServer(ClientStore(clickhouse_client), "chdb://memory")
    server.start()
    try:
        yield EndpointStore(f"http://127.0.0.1:{server.port}", server.token)
    finally:
        server.stop()


def _tables(client: Client, db: str) -> list[str]:
    rows = client.query(f"SELECT name FROM system.tables WHERE database = '{db}'").result_rows
    return sorted(r[0] for r in rows)


@pytest.mark.parametrize("sql", WRITES)
def test_the_endpoint_refuses_what_is_not_a_read(
    endpoint: EndpointStore, clickhouse_client: Client, audit_db: str, sql: str,
) -> None:
    before = _tables(clickhouse_client, audit_db)
    with pytest.raises(StoreError):
        endpoint.query(sql.format(db=audit_db))
    assert _tables(clickhouse_client, audit_db) == before
    assert endpoint.query(f"SELECT count() FROM {audit_db}.audit_events").rows == [(0,)]


@pytest.mark.parametrize("sql", [s for s in WRITES if not s.startswith(("SELECT", "WITH"))][:4])
def test_the_engine_refuses_writes_a_prefix_check_would_let_through(
    clickhouse_client: Client, audit_db: str, sql: str,
) -> None:
    """The store itself (what the endpoint and the CLI run on) refuses them too, not only the check."""
    if not is_embedded(clickhouse_client):
        pytest.skip("on a server the reader user's profile enforces readonly=1")
    store = ClientStore(clickhouse_client)
    with pytest.raises(StoreError):
        store.query(sql.format(db=audit_db))
    assert store.query(f"SELECT count() FROM {audit_db}.audit_events").rows == [(0,)]
    clickhouse_client.command(f"INSERT INTO {audit_db}.schema_migration_steps VALUES (99, 0)")  # writes work


def test_reads_still_work(endpoint: EndpointStore, audit_db: str) -> None:
    assert endpoint.query("SELECT 1 AS one").rows == [(1,)]
    assert endpoint.query("SHOW TABLES FROM " + audit_db).rows
