"""The audit sink's schema at start: apply the migrations, or only check them (an insert-only user).

``SLUICEGATE_AUDIT_MIGRATIONS=apply`` (the default) lets the sink run the pending migrations itself, as
the embedded engine and a first local try need. ``skip`` is for a sink that runs as an insert-only
ClickHouse user (``sluicegate audit users``): an administrator runs ``sluicegate audit migrate`` once
per release, and the sink only reads ``schema_migrations`` (no DDL at all, not even ``IF NOT EXISTS``)
and refuses to start, naming what is missing, when the schema is behind the code.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from infra.clickhouse.migrate import (
    CommandClient,
    MigrationError,
    applied_versions,
    check_identifier,
    load_migrations,
    migrate,
)

MigrationsMode = Literal["apply", "skip"]
MIGRATIONS_MODES: Final = get_args(MigrationsMode)
DEFAULT_MIGRATIONS: Final[MigrationsMode] = "apply"


class SchemaBehind(MigrationError):
    """The audit schema lacks migrations this sink needs, and the sink may not apply them (``skip``)."""

    def __init__(self, database: str, missing: list[int]) -> None:
        self.database, self.missing = database, missing
        versions = ", ".join(f"{v:04d}" for v in missing)
        super().__init__(
            f"the audit schema of database {database!r} is behind this sink: migrations {versions} are not "
            "applied, and SLUICEGATE_AUDIT_MIGRATIONS=skip forbids the sink to apply them; run "
            f"`sluicegate audit migrate --database {database}` as a ClickHouse administrator, then start "
            "the sink again")


def missing_versions(client: CommandClient, database: str) -> list[int]:
    """The migration versions this code has and ``database`` has not applied (all of them when the
    database or its ``schema_migrations`` table does not exist); reads only."""
    db = check_identifier(database)
    exists = client.command(f"SELECT count() FROM system.tables WHERE database = '{db}' "
                            "AND name = 'schema_migrations'")
    applied = applied_versions(client, db) if int(exists) else set()
    return [m.version for m in load_migrations() if m.version not in applied]


def prepare_schema(client: CommandClient, database: str, mode: MigrationsMode) -> list[int]:
    """Make sure the sink can write ``database``: ``apply`` runs the pending migrations (returning the
    versions applied), ``skip`` checks that none is pending (raising :class:`SchemaBehind`)."""
    if mode == "apply":
        return migrate(client, database)
    missing = missing_versions(client, database)
    if missing:
        raise SchemaBehind(database, missing)
    return []
