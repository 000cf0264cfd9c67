"""Run by an installed sluicegate's interpreter: where the data files its commands open come from.

Resolves each file through the function or constant the code itself uses, reads it the way the code
does, and prints one JSON object: ``site`` (that interpreter's site-packages) and ``files`` (label ->
absolute path). The test asserts every path exists and lies under ``site``.
"""

from __future__ import annotations

import json
import sysconfig
from importlib.resources import files
from pathlib import Path

import consumers
import infra
import policies
import schemas
import sluicegate
import streams
from infra.clickhouse.migrate import MIGRATIONS_DIR, load_migrations
from infra.kafka.artifacts import render_pom
from infra.kafka.launcher import render_server_properties
from infra.kafka.templates import render_file
from policies import DEMO_POLICY, EXAMPLES_DIR
from schemas.export import SCHEMA_DIR, rendered
from sluicegate.policy_testing import default_cases_path, load_case_file
from streams.engine import load_policy


def main() -> None:
    found: dict[str, str] = {}
    for package in (sluicegate, streams, consumers, schemas, infra, policies):
        found[f"package {package.__name__}"] = str(Path(package.__file__ or "").resolve())

    load_policy(DEMO_POLICY)  # what `sluicegate demo` publishes
    found["demo policy"] = str(DEMO_POLICY)
    for policy in sorted(EXAMPLES_DIR.glob("*.yaml")):
        load_policy(policy)
        cases = default_cases_path(policy)  # what `sluicegate policy test` opens
        load_case_file(cases)
        found[f"example {policy.name}"] = str(policy)
        found[f"cases {policy.name}"] = str(cases)

    # the local Kafka launcher renders these templates from its package
    render_pom("3.9.0")
    render_server_properties(9092, 9093, Path("/tmp/log"))
    render_file("log4j.properties", {})
    for name in ("pom.xml", "server.properties", "log4j.properties"):
        found[f"kafka {name}"] = str(files("infra.kafka").joinpath(name))

    migrations = load_migrations()  # `sluicegate audit migrate` and the sink
    if not migrations:
        raise SystemExit(f"no migrations in {MIGRATIONS_DIR}")
    for migration in migrations:
        path = MIGRATIONS_DIR / f"{migration.version:04d}_{migration.name}.sql"
        found[f"migration {path.name}"] = str(path)

    for name in rendered():  # the JSON Schemas other languages build intents from
        found[f"schema {name}"] = str(SCHEMA_DIR / name)

    print(json.dumps({"site": sysconfig.get_paths()["purelib"], "files": found}))


if __name__ == "__main__":
    main()
