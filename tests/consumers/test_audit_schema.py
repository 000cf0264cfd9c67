"""``SLUICEGATE_AUDIT_MIGRATIONS=skip``: the audit sink applies no DDL, runs on a schema an administrator
migrated, and refuses clearly (naming the missing migrations) when the schema is behind; on the real
engine, which refuses every DDL statement in the insert-only case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from consumers.audit_schema import SchemaBehind, missing_versions, prepare_schema
from infra.clickhouse.migrate import load_migrations
from schemas import TopicNames
from tests.consumers.kafka_io import create_topics, publish
from tests.consumers.test_audit_sink import workload

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = [m.version for m in load_migrations()]


def databases(client: Client) -> set[str]:
    return {str(row[0]) for row in client.query("SELECT name FROM system.databases").result_rows}


def test_skip_refuses_a_database_nobody_migrated_and_creates_nothing(
    clickhouse_client: Client, unique_name: str,
) -> None:
    with pytest.raises(SchemaBehind) as refused:
        prepare_schema(clickhouse_client, unique_name, "skip")
    assert refused.value.missing == VERSIONS
    assert f"sluicegate audit migrate --database {unique_name}" in str(refused.value)
    assert unique_name not in databases(clickhouse_client)


def test_skip_passes_on_a_migrated_schema_and_refuses_one_behind(
    clickhouse_client: Client, unique_name: str,
) -> None:
    assert prepare_schema(clickhouse_client, unique_name, "apply") == VERSIONS
    assert prepare_schema(clickhouse_client, unique_name, "skip") == []
    latest = VERSIONS[-1]
    clickhouse_client.command(f"TRUNCATE TABLE {unique_name}.schema_migrations")
    for version in VERSIONS[:-1]:  # as if the code moved on to a release whose migration was not run yet
        clickhouse_client.command(f"INSERT INTO {unique_name}.schema_migrations (version, name, checksum) "
                                  f"VALUES ({version}, 'm', '')")
    with pytest.raises(SchemaBehind, match=f"migrations {latest:04d} are not applied") as refused:
        prepare_schema(clickhouse_client, unique_name, "skip")
    assert refused.value.missing == [latest]
    assert missing_versions(clickhouse_client, unique_name) == [latest], "skip applied nothing"


def sink_process(url: str, bootstrap: str, prefix: str, database: str, migrations: str,
                 rows: int) -> subprocess.CompletedProcess[str]:
    """The production sink in a process of its own whose engine refuses all DDL."""
    argv = [sys.executable, "-m", "tests.consumers.insert_only_sink", "--url", url, "--bootstrap", bootstrap,
            "--topic-prefix", prefix, "--database", database, "--migrations", migrations, "--rows", str(rows)]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)


@pytest.mark.integration
async def test_a_sink_without_ddl_rights_stores_the_audit_once_an_admin_migrated(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path,
) -> None:
    url, database = f"chdb://{tmp_path / 'audit'}", unique_name
    topics = TopicNames(unique_name)
    await create_topics(kafka_bootstrap, topics)
    records = workload(20)
    await publish(kafka_bootstrap, topics, records)
    env = {**os.environ, "SLUICEGATE_CLICKHOUSE_URL": url}
    migrate = [sys.executable, "-m", "sluicegate.cli", "audit", "migrate", "--database", database]
    admin = subprocess.run(migrate, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
                           check=False)
    assert admin.returncode == 0, admin.stderr
    applying = sink_process(url, kafka_bootstrap, unique_name, database, "apply", len(records))
    assert applying.returncode != 0 and "DDL queries are prohibited" in applying.stderr, (
        "the engine refuses DDL: a sink that applies migrations cannot start there")
    skipping = sink_process(url, kafka_bootstrap, unique_name, database, "skip", len(records))
    assert skipping.returncode == 0, skipping.stderr[-3000:]
    assert json.loads(skipping.stdout.splitlines()[-1])["rows_inserted"] == len(records)


def test_the_sink_command_refuses_a_schema_behind_before_touching_kafka(tmp_path: Path) -> None:
    env = {**os.environ, "SLUICEGATE_AUDIT_MIGRATIONS": "skip"}
    argv = [sys.executable, "-m", "consumers.audit_sink", "--url", f"chdb://{tmp_path / 'audit'}",
            "--bootstrap", "127.0.0.1:1", "--database", "audit_new", "--decoders", "0"]
    refused = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
                             check=False)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "sluicegate audit migrate --database audit_new" in refused.stderr
    assert "Traceback" not in refused.stderr
