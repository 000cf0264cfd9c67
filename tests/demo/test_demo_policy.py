"""The demo's fleet policy passes its own policy tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluicegate.policy_testing import Case, load_case_file, run_case
from streams.engine import load_policy

POLICIES = Path(__file__).resolve().parents[2] / "policies"
CASES = load_case_file(POLICIES / "cases" / "demo.yaml")
POLICY = load_policy(POLICIES / "demo.yaml")


@pytest.mark.parametrize("case", CASES.cases, ids=[case.name for case in CASES.cases])
def test_demo_policy_case(case: Case) -> None:
    failure = run_case(POLICY, case).failure
    assert failure is None, failure.describe()
