"""Fixtures of the audit tests: a migrated database per test, and a way to store records directly."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
from clickhouse_connect.driver.client import Client

from consumers.audit_rows import COLUMNS, arrow_stream, row, to_arrow
from consumers.audit_store import ClientStore
from infra.clickhouse.migrate import migrate
from schemas import AuditRecord

Store = Callable[[Iterable[AuditRecord]], None]


@pytest.fixture
def audit_db(clickhouse_client: Client, unique_name: str) -> str:
    """A freshly migrated audit database."""
    migrate(clickhouse_client, unique_name)
    return unique_name


@pytest.fixture
def audit_store(clickhouse_client: Client) -> ClientStore:
    """The test process's store."""
    return ClientStore(clickhouse_client)


@pytest.fixture
def store_records(clickhouse_client: Client, audit_db: str) -> Store:
    """Insert records straight into ``audit_events`` (as the sink would), one batch per call."""
    offset = iter(range(10**9))

    def store(records: Iterable[AuditRecord]) -> None:
        rows = [row(record, ("direct", 0, next(offset))) for record in records]
        block = arrow_stream([to_arrow(rows)])
        clickhouse_client.raw_insert(f"{audit_db}.audit_events", list(COLUMNS), block, fmt="ArrowStream")

    return store
