"""Versioned, idempotent DDL for the audit store: ``migrations/NNNN_name.sql`` applied in order.

Each applied version is recorded in ``{db}.schema_migrations``; applying again is a no-op. Each
statement done is recorded in ``{db}.schema_migration_steps`` as it completes, so a run interrupted half
way through a migration resumes after its last completed statement (a migration that rebuilds a table
cannot simply run again); statements also use ``IF NOT EXISTS`` for the instant between a statement
and its record.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

MIGRATIONS_DIR: Final = Path(__file__).with_name("migrations")
DEFAULT_DATABASE: Final = "sluicegate"
DEFAULT_TTL_DAYS: Final = 365
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TTL_TABLES: Final = ("audit_events", "decision_events", "decisions_per_minute", "decision_determining",
                     "determining_per_minute")
_TTL_COLUMNS: Final = {"audit_events": "toDateTime(event_time)", "decision_events": "minute",
                       "decisions_per_minute": "minute", "decision_determining": "minute",
                       "determining_per_minute": "minute"}


class MigrationError(Exception):
    """A migration file or argument is invalid."""


class CommandClient(Protocol):
    """The part of a clickhouse-connect client that migrations need."""

    def command(self, cmd: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class Migration:
    """One versioned DDL file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text, recorded with the version."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self, database: str, ttl_days: int) -> list[str]:
        """The file's statements with ``{db}`` and ``{ttl_days}`` filled in."""
        text = "\n".join(line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))
        rendered = text.replace("{db}", database).replace("{ttl_days}", str(ttl_days))
        return [part.strip() for part in rendered.split(";") if part.strip()]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration file, by version; duplicate versions are an error."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version} is used twice")
        found[version] = Migration(version, match.group(2), path.read_text())
    return [found[v] for v in sorted(found)]


def check_identifier(database: str) -> str:
    """A database name safe to splice into DDL."""
    if not _IDENTIFIER.match(database):
        raise MigrationError(f"invalid database name {database!r}: letters, digits and _ only")
    return database


def applied_versions(client: CommandClient, database: str) -> set[int]:
    """Versions already recorded in the database."""
    raw = client.command(f"SELECT arrayStringConcat(groupArray(toString(version)), ',') "
                         f"FROM {database}.schema_migrations")
    return {int(v) for v in str(raw).split(",") if v}


def _done_steps(client: CommandClient, database: str, version: int) -> set[int]:
    """The statements of migration ``version`` already done (by a run that stopped before the end)."""
    raw = client.command(f"SELECT arrayStringConcat(groupArray(toString(step)), ',') "
                         f"FROM {database}.schema_migration_steps WHERE version = {version}")
    return {int(v) for v in str(raw).split(",") if v}


def migrate(client: CommandClient, database: str = DEFAULT_DATABASE,
            ttl_days: int = DEFAULT_TTL_DAYS, set_ttl: bool = False) -> list[int]:
    """Apply the pending migrations; return the versions applied now. ``set_ttl`` re-applies the TTL."""
    check_identifier(database)
    if ttl_days < 1:
        raise MigrationError(f"ttl_days must be at least 1, got {ttl_days}")
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations (version UInt32, name String, "
        f"checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        f"ENGINE = ReplacingMergeTree ORDER BY version"
    )
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migration_steps (version UInt32, step UInt32) "
        f"ENGINE = ReplacingMergeTree ORDER BY (version, step)"
    )
    done = applied_versions(client, database)
    applied: list[int] = []
    for migration in load_migrations():
        if migration.version in done:
            continue
        steps = _done_steps(client, database, migration.version)
        for step, statement in enumerate(migration.statements(database, ttl_days)):
            if step in steps:
                continue
            client.command(statement)
            client.command(f"INSERT INTO {database}.schema_migration_steps (version, step) VALUES "
                           f"({migration.version}, {step})")
        client.command(
            f"INSERT INTO {database}.schema_migrations (version, name, checksum) VALUES "
            f"({migration.version}, '{migration.name}', '{migration.checksum}')"
        )
        applied.append(migration.version)
    if set_ttl and not applied:
        for table in TTL_TABLES:
            client.command(f"ALTER TABLE {database}.{table} MODIFY TTL "
                           f"{_TTL_COLUMNS[table]} + INTERVAL {ttl_days} DAY")
    return applied
