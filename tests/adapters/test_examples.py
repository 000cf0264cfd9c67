"""The adapters' examples run as written, against the package's worker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.adapters.conftest import Deployment
from tests.streams.harness import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("example", "expected"), [
    ("langgraph_refunds.py", ["tool: refunded 40.0 to c1", "refund-blocked: refunds over 1000"]),
    ("openai_agents_refunds.py", ["tool_call_output_item refunded 40.0 to c1", "Done."]),
])
def test_the_example_runs(deployment: Deployment, example: str, expected: list[str]) -> None:
    env = {**{k: v for k, v in os.environ.items() if k != "SLUICEGATE_TRUST_OFF"},
           "KAFKA_BOOTSTRAP_SERVERS": deployment.worker.bootstrap,
           "SLUICEGATE_TOPIC_PREFIX": deployment.worker.prefix, "SLUICEGATE_DECISION_TIMEOUT_S": "60",
           "SLUICEGATE_AGENT_CREDENTIAL": str(deployment.credential())}
    ran = subprocess.run([sys.executable, str(ROOT / "examples" / example)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=240)
    assert ran.returncode == 0, ran.stderr[-3000:]
    for line in expected:
        assert line in ran.stdout, ran.stdout
