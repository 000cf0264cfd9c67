"""Every CLI command that talks to Kafka or ClickHouse, pointed at a closed port, ends with one line on
stderr naming what it tried, and a non-zero exit: never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "policies" / "examples" / "database.yaml"
STRICTER = ROOT / "policies" / "examples" / "financial.yaml"
TIMEOUT_S = 120


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


PORT = closed_port()
KAFKA = f"cannot reach Kafka at 127.0.0.1:{PORT}: "
CLICKHOUSE = f"cannot reach ClickHouse at http://127.0.0.1:{PORT}: "


def sluicegate(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sluicegate.cli", *args], env=env, cwd=cwd, text=True,
                          capture_output=True, timeout=TIMEOUT_S, check=False)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Settings with trust on (so nothing warns of it being off), every credential, reviewers files, and
    Kafka and ClickHouse on the closed port."""
    home = tmp_path_factory.mktemp("unreachable")
    base = {name: value for name, value in os.environ.items() if not name.startswith("SLUICEGATE_")}
    base.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    base["SLUICEGATE_STATE_DIR"] = str(home / "state")
    values: dict[str, str] = {}
    for command in (["init", "keys"], ["publisher", "keys", "pub"], ["reviewer", "keys", "alice"],
                    ["bot", "keys", "bot"]):
        done = sluicegate("trust", *command, env=base, cwd=home)
        assert done.returncode == 0, done.stderr
        values.update(line.partition("=")[::2] for line in done.stdout.splitlines() if "=" in line)
    (home / "reviewers.yaml").write_text("groups:\n  finance: [alice]\n")
    (home / "slack-users.yaml").write_text("users:\n  U1: alice\n")
    yield {
        **base, **values,
        "SLUICEGATE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{PORT}",
        "SLUICEGATE_CLICKHOUSE_URL": f"http://127.0.0.1:{PORT}",
        "SLUICEGATE_REVIEWERS_FILE": str(home / "reviewers.yaml"),
        "SLUICEGATE_SLACK_BOT_TOKEN": "xoxb-test", "SLUICEGATE_SLACK_SIGNING_SECRET": "secret",
        "SLUICEGATE_SLACK_REVIEWERS_FILE": str(home / "slack-users.yaml"),
        "SLUICEGATE_SLACK_PORT": str(closed_port()),
    }


SCRAM = {"SLUICEGATE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
         "SLUICEGATE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "SLUICEGATE_KAFKA_SASL_USERNAME": "admin",
         "SLUICEGATE_KAFKA_SASL_PASSWORD": "secret"}
SERVICES = {"audit sink"}
"""Commands that configure logging before connecting: their log lines may come first."""
KAFKA_COMMANDS: list[tuple[list[str], dict[str, str]]] = [
    (["policy", "publish", str(POLICY)], {}),
    (["policy", "publish", "--shadow", str(POLICY)], {}),
    (["policy", "promote"], {}),
    (["approvals", "list"], {}),
    (["approvals", "approve", "0123abcd"], {}),
    (["approvals", "deny", "0123abcd", "--reason", "not now"], {}),
    (["worker", "--upgrade"], {}),
    (["worker", "--web-port", str(closed_port())], {}),
    (["slack", "run"], {}),
    (["kafka", "acls", "--apply"], SCRAM),
]
CLICKHOUSE_COMMANDS: list[tuple[list[str], dict[str, str]]] = [
    (["audit", "migrate"], {}),
    (["audit", "query", "SELECT 1"], {}),
    (["audit", "report"], {}),
    (["audit", "verify"], {}),
    (["audit", "sink"], {}),
    (["backtest", "--policy", str(POLICY)], {}),
    (["policy", "diff", str(POLICY), str(STRICTER), "--since", "1d"], {}),
    (["policy", "shadow-report"], {}),
]
CASES = [*((args, extra, KAFKA) for args, extra in KAFKA_COMMANDS),
         *((args, extra, CLICKHOUSE) for args, extra in CLICKHOUSE_COMMANDS)]


@pytest.mark.parametrize(("args", "extra", "names"), CASES, ids=[" ".join(case[0][:2]) for case in CASES])
def test_an_unreachable_service_ends_the_command_with_one_line(
    args: list[str], extra: dict[str, str], names: str, env: dict[str, str], tmp_path: Path,
) -> None:
    done = sluicegate(*args, env={**env, **extra}, cwd=tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    if " ".join(args[:2]) not in SERVICES:
        assert len(lines) == 1, done.stderr
    assert lines[-1].startswith(f"sluicegate: {names}") or (  # the approvals commands say it themselves
        lines[-1].startswith("error: ") and f"Kafka at 127.0.0.1:{PORT}" in lines[-1]), done.stderr


def test_the_sink_names_kafka_when_clickhouse_is_embedded(env: dict[str, str], tmp_path: Path) -> None:
    embedded = {**env, "SLUICEGATE_CLICKHOUSE_URL": f"chdb://{tmp_path / 'audit'}"}
    done = sluicegate("audit", "sink", env=embedded, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"sluicegate: {KAFKA}"), done.stderr
