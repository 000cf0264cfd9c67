"""Least-privilege ClickHouse users for a server deployment (the embedded engine has no users).

- the **sink** may insert audit rows and nothing else: INSERT on ``audit_events`` and on the rollup
  tables its materialized views write, SELECT on the tables those views read (a view runs with the
  inserting user's rights on servers without SQL SECURITY DEFINER), and SELECT on ``schema_migrations``
  (a sink with ``SLUICEGATE_AUDIT_MIGRATIONS=skip`` checks the schema's version there);
- the **reader** (reports, backtests, ``audit query``, ``audit verify``, Grafana) runs with
  ``readonly = 1`` in its settings, which no query can change: SELECT on the database, nothing else.

Migrations are DDL: run them (``sluicegate audit migrate``) as an administrator, then give the sink
(started with ``SLUICEGATE_AUDIT_MIGRATIONS=skip``) and the readers their own users. ``sluicegate audit
users`` prints these statements (``--apply`` runs them with the configured, administrative URL).
"""

from __future__ import annotations

import re
from typing import Final

from infra.clickhouse.migrate import CommandClient, check_identifier

VIEW_TARGETS: Final = ("decision_events", "decisions_per_minute", "decision_determining",
                       "determining_per_minute", "approval_latency")
"""Tables the materialized views insert into when the sink inserts into ``audit_events``."""
VIEW_SOURCES: Final = ("audit_events", "decision_events", "decision_determining")
"""Tables the views read while the sink inserts (their ``NOT IN`` lookups)."""
SCHEMA_TABLE: Final = "schema_migrations"
"""What a sink started with ``SLUICEGATE_AUDIT_MIGRATIONS=skip`` reads to check the schema's version."""
_PASSWORD: Final = re.compile(r"^[^'\\\n]{12,200}$")


def user_statements(database: str, sink: str, sink_password: str, reader: str,
                    reader_password: str) -> list[str]:
    """The DDL creating the sink's insert-only user and the readers' ``readonly = 1`` user."""
    db = check_identifier(database)
    for name in (sink, reader):
        check_identifier(name)
    for password in (sink_password, reader_password):
        if not _PASSWORD.match(password):
            raise ValueError("passwords are 12-200 characters without quotes, backslashes or newlines")
    return [
        f"CREATE USER IF NOT EXISTS {sink} IDENTIFIED WITH sha256_password BY '{sink_password}'",
        f"GRANT INSERT ON {db}.audit_events TO {sink}",
        *(f"GRANT INSERT ON {db}.{table} TO {sink}" for table in VIEW_TARGETS),
        *(f"GRANT SELECT ON {db}.{table} TO {sink}" for table in (*VIEW_SOURCES, SCHEMA_TABLE)),
        f"CREATE USER IF NOT EXISTS {reader} IDENTIFIED WITH sha256_password BY '{reader_password}' "
        "SETTINGS readonly = 1",
        f"GRANT SELECT ON {db}.* TO {reader}",
    ]


def create_users(client: CommandClient, database: str, sink: str, sink_password: str, reader: str,
                 reader_password: str) -> None:
    """Run :func:`user_statements` (as an administrator of a ClickHouse server)."""
    for statement in user_statements(database, sink, sink_password, reader, reader_password):
        client.command(statement)
