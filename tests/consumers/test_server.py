"""The audit against a ClickHouse server: the CLI's path (open_store on an http URL) end to end.

Runs when ``SLUICEGATE_CLICKHOUSE_URL`` names a server (or a Docker engine lets the fixtures start
one); on the embedded engine it is skipped, and says so. Every other audit test also runs against
the server then, through the same ``clickhouse_url`` fixture.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from consumers.analytics import build_report
from consumers.audit_store import ClientStore, open_store
from tests.consumers.conftest import Store
from tests.consumers.test_report import UNTIL, _dataset


@pytest.fixture
def server_url(clickhouse_url: str) -> str:
    if not clickhouse_url.startswith(("http://", "https://")):
        pytest.skip(
            "no ClickHouse server: set SLUICEGATE_CLICKHOUSE_URL=http://host:8123 (or run a Docker "
            "engine) to run the audit against a server; the embedded engine is tested everywhere else"
        )
    return clickhouse_url


def test_cli_store_talks_to_the_server_directly(server_url: str, store_records: Store, audit_db: str) -> None:
    store = open_store(server_url)
    assert isinstance(store, ClientStore)  # no sink endpoint in between: servers serve everyone
    store_records(_dataset())
    report = build_report(store, audit_db, timedelta(hours=24), until=UNTIL)
    assert sorted(report.decisions) == [
        ("ALLOW", True, 5),
        ("BLOCK", True, 4),
        ("REQUIRE_APPROVAL", False, 7),
    ]
