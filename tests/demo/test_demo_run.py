"""The demo end to end on the real broker: worker, audit sink, reviewer, fleet, audit report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_a_short_demo_decides_approves_and_reports(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SLUICEGATE_STATE_DIR": str(tmp_path / "state"),
        "COLUMNS": "160",
    }
    env.pop("SLUICEGATE_CLICKHOUSE_URL", None)
    completed = subprocess.run(
        [sys.executable, "-m", "sluicegate.cli", "demo", "--agents", "40", "--rate", "40",
         "--seconds", "8", "--no-live"],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    assert "trust on: keys in" in output and "signed by publisher demo" in output
    decided = re.search(r"decisions: (\d+)", output)
    assert decided and int(decided.group(1)) >= 200, output[-4000:]
    assert re.search(r"granted: [1-9]", output), "the reviewer approved nothing:\n" + output[-4000:]
    assert "audit report (ClickHouse)" in output
    stored = re.search(r"│ ALLOW\s+│ True\s+│ (\d+)", output)
    assert stored and int(stored.group(1)) > 0, "the audit report shows no stored decisions"
    assert "saas-rogue-1" in output  # the bulk-deleting agent is among the top blocked
    ran = re.search(r"tools ran: (\d+) ok", output)
    assert ran and int(ran.group(1)) > 0, "no tool ran through its guard"
    deviating = output.split("Agents deviating most from their history", 1)[-1]
    assert re.search(r"│ [a-z]+-(rogue-1|\d{4}) +│ \d+", deviating), "no agent has a history to deviate from"

    (run,) = (tmp_path / "state" / "demo").iterdir()
    query = subprocess.run(
        [sys.executable, "-m", "sluicegate.cli", "audit", "query",
         "SELECT event_type, count() FROM sluicegate.audit_events GROUP BY event_type ORDER BY event_type"],
        env={**env, "SLUICEGATE_CLICKHOUSE_URL": f"chdb://{run / 'audit'}"},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert query.returncode == 0, query.stdout + query.stderr
    outcomes = re.search(r"outcome\W+(\d+)", query.stdout)
    assert outcomes and int(outcomes.group(1)) > 0, f"no outcome in the audit:\n{query.stdout}"
