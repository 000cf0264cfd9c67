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
