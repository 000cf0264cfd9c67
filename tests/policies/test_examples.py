"""Every case of every example case file, one test item per case, through the runner."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from schemas.policy import Limit, Rule, Sequence
from sluicegate.policy_testing import Case, CaseFile, load_case_file, run_case
from streams.engine import CompiledPolicy, load_policy

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"
SCENARIOS = (
    "customer_support", "devops", "financial", "saas_workflow", "database", "fleet_budget", "risk",
    "sequences",
)


@functools.cache
def _case_file(stem: str) -> CaseFile:
    return load_case_file(EXAMPLES / "cases" / f"{stem}.yaml")


@functools.cache
def _policy(path: Path) -> CompiledPolicy:
    return load_policy(path)


def _all_cases() -> list[tuple[str, Case]]:
    return [(stem, case) for stem in SCENARIOS for case in _case_file(stem).cases]


def test_one_policy_and_one_case_file_per_scenario() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.yaml")) == sorted(SCENARIOS)
    assert sorted(p.stem for p in (EXAMPLES / "cases").glob("*.yaml")) == sorted(SCENARIOS)
    for stem in SCENARIOS:
        assert _case_file(stem).policy_path.resolve() == (EXAMPLES / f"{stem}.yaml").resolve()


@pytest.mark.parametrize("stem", SCENARIOS)
def test_every_rule_and_limit_has_a_description(stem: str) -> None:
    document = _policy(EXAMPLES / f"{stem}.yaml").document
    entries: list[Rule | Limit | Sequence] = [*document.rules, *document.limits, *document.sequences]
    assert entries
    assert all(entry.description.strip() for entry in entries)


@pytest.mark.parametrize("stem", SCENARIOS)
def test_every_rule_and_limit_is_exercised_by_a_case(stem: str) -> None:
    """Each rule, limit and sequence rule id appears in the expected ``rules`` of at least one case."""
    document = _policy(EXAMPLES / f"{stem}.yaml").document
    expected = {
        rule
        for case in _case_file(stem).cases
        for step in case.steps
        for rule in (step.expect.rules or ())
    }
    ids = {rule.id for rule in document.rules} | {limit.id for limit in document.limits}
    ids |= {sequence.id for sequence in document.sequences}
    assert ids - expected == set()


@pytest.mark.parametrize(("stem", "case"), _all_cases(), ids=lambda v: v if isinstance(v, str) else v.name)
def test_case(stem: str, case: Case) -> None:
    case_file = _case_file(stem)
    result = run_case(_policy(case_file.policy_path.resolve()), case)
    assert result.failure is None, f"{case_file.path}:{case.line} {case.name}\n{result.failure.describe()}"
