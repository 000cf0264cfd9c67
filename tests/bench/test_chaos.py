"""The chaos run as a test: a short run (``bench/chaos.py --seconds 60``, sized for two cores) injects
every kind of fault at least once and ends with nothing lost, duplicated, contradicted, over a limit,
missing from or extra in the audit, and no process exit it did not cause."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.chaos_faults import SIDE_KINDS, WORKER_KINDS
from bench.chaos_reconcile import COUNTERS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 1500
ARGS = ["--seconds", "60", "--rate", "20", "--workers", "2", "--partitions", "4", "--seed", "3",
        "--decision-timeout", "240", "--fleet-processes", "2"]
"""Small enough for two shared cores. The agents wait out a failover and a broker restart (which takes
a minute on a loaded machine): an agent that gave up earlier is told governance_unavailable, and a later
decision of its intent would count as a conflict."""


@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_a_short_chaos_run_injects_every_fault_and_loses_nothing(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "chaos.py"), "--json", *ARGS,
                           "--keep", str(tmp_path / "run")],
                          cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert done.stdout.strip(), done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {name: result[name] for name in COUNTERS} == dict.fromkeys(COUNTERS, 0), done.stdout
    assert set(result["faults"]) == {*WORKER_KINDS, *SIDE_KINDS}, result["faults"]
    assert result["bad_inputs"] > 0 and result["decided"] > 0
