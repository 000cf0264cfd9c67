"""Unit tests of the case-file runner: loading, time and id expansion, failures, and the CLI."""

from __future__ import annotations

import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.common import DecisionKind
from sluicegate.cli.policy import app
from sluicegate.policy_testing import (
    CaseFileError,
    default_cases_path,
    load_case_file,
    run_case,
    run_case_file,
)
from streams.engine import load_policy

POLICY = """\
policy: tiny
rules:
  - id: small-refund
    description: Small refunds are fine.
    match: {tool: payments.refund}
    when: {field: params.amount, op: lte, value: 50}
    decision: ALLOW
  - id: big-refund
    description: Big refunds need a person.
    match: {tool: payments.refund}
    when: {field: params.amount, op: gt, value: 50}
    decision: REQUIRE_APPROVAL
limits:
  - id: three-per-minute
    description: Three refunds per agent per minute.
    match: {tool: payments.refund}
    key: agent
    window: 1m
    count: 3
    decision: BLOCK
"""

HEADER = """\
policy: tiny.yaml
defaults:
  agent_id: agent-1
  agent_role: support
  environment: production
  occurred_at: "2026-01-05T10:00:00Z"
cases:
"""

REFUND = '{tool: payments.refund, action: create, target: "payments:refunds", params: {amount: 10}}'


def _write(tmp_path: Path, cases: str, name: str = "tiny_cases.yaml") -> Path:
    (tmp_path / "tiny.yaml").write_text(POLICY)
    path = tmp_path / name
    path.write_text(HEADER + textwrap.indent(textwrap.dedent(cases), "  "))
    return path


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# --- loading and expansion ---------------------------------------------------------------------------


def test_defaults_merge_under_the_intent_and_the_policy_is_relative(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
        - name: override
          intent: {tool: payments.refund, action: create, target: "payments:refunds", agent_id: agent-9}
          expect: ALLOW
        """)
    case_file = load_case_file(path)
    intent = case_file.cases[0].steps[0].intents[0]
    assert (intent.agent_id, intent.agent_role, intent.environment) == ("agent-9", "support", "production")
    assert intent.occurred_at == _at("2026-01-05T10:00:00Z")
    assert case_file.policy_path == tmp_path / "tiny.yaml"


def test_steps_continue_every_after_the_previous_step_and_explicit_times_override(tmp_path: Path) -> None:
    path = _write(tmp_path, f"""\
        - name: timing
          steps:
            - {{intent: {REFUND}, repeat: 3, every: 1m, expect: ALLOW}}
            - {{intent: {REFUND}, every: 500ms, expect: ALLOW}}
            - {{intent: {REFUND}, expect: ALLOW}}
            - intent: {{tool: payments.refund, action: create, target: "payments:refunds",
                        occurred_at: "2026-01-06T00:00:00+02:00"}}
              repeat: 2
              every: 1h
              expect: ALLOW
        """)
    steps = load_case_file(path).cases[0].steps
    times = [intent.occurred_at for step in steps for intent in step.intents]
    start = _at("2026-01-05T10:00:00Z")
    assert times == [
        start,
        start + timedelta(minutes=1),
        start + timedelta(minutes=2),
        start + timedelta(minutes=2, milliseconds=500),
        start + timedelta(minutes=2, seconds=1, milliseconds=500),  # default every: 1s
        _at("2026-01-05T22:00:00Z"),
        _at("2026-01-05T23:00:00Z"),
    ]


def test_request_ids_are_deterministic_and_distinct(tmp_path: Path) -> None:
    path = _write(tmp_path, f"""\
        - name: one
          steps:
            - {{intent: {REFUND}, repeat: 3, expect: ALLOW}}
            - {{intent: {REFUND}, expect: ALLOW}}
        - name: two
          intent: {REFUND}
          expect: ALLOW
        - name: given
          intent: {{tool: payments.refund, action: create, target: "payments:refunds",
                    request_id: "00000000-0000-4000-8000-000000000001"}}
          expect: ALLOW
        """)
    first, again = load_case_file(path), load_case_file(path)
    ids = [i.request_id for c in first.cases for s in c.steps for i in s.intents]
    assert ids == [i.request_id for c in again.cases for s in c.steps for i in s.intents]
    assert len(set(ids)) == len(ids) == 6
    assert ids[-1] == uuid.UUID("00000000-0000-4000-8000-000000000001")


@pytest.mark.parametrize(
    ("cases", "line", "message"),
    [
        # the case starts on line 8 (after the 7 header lines), its intent is on 9, the next key on 10
        ("- name: a\n  intent: {tool: x}\n  expect: ALLOW\n  colour: red\n", 11, "unknown field 'colour'"),
        ("- name: a\n  intent: " + REFUND + "\n", 8, "needs expect"),
        ("- name: a\n  intent: " + REFUND + "\n  expect: MAYBE\n", 10, "expect"),
        ("- name: a\n  steps:\n    - {intent: " + REFUND + ", every: soon, expect: ALLOW}\n", 10,
         "every: bad duration 'soon'"),
        ("- name: a\n  intent: " + REFUND + "\n  steps:\n    - {intent: " + REFUND + ", expect: ALLOW}\n", 8,
         "either intent"),
        ("- name: a\n  intent: " + REFUND + "\n  expect: ALLOW\n"
         "- name: a\n  intent: " + REFUND + "\n  expect: ALLOW\n", 11, "duplicate case name 'a' (line 8)"),
        ("- name: a\n  intent: {tool: x, action: fly, target: 'a:b'}\n  expect: ALLOW\n", 9, "action"),
        ("- name: a\n  intent: {tool: x, action: read, target: 'a:b', occurred_at: '2026-01-05T10:00:00'}\n"
         "  expect: ALLOW\n", 9, "occurred_at"),
        ("- name: a\n  intent: {tool: x\n  expect: ALLOW\n", 10, "YAML"),
        ("- name: a\n  name: b\n  intent: " + REFUND + "\n  expect: ALLOW\n", 9, "duplicate key 'name'"),
        ("- name: a\n  steps:\n    - {intent: " + REFUND + ", repeat: 0, expect: ALLOW}\n", 10, "repeat"),
    ],
)
def test_a_bad_case_file_is_reported_with_its_line(
    tmp_path: Path, cases: str, line: int, message: str,
) -> None:
    path = _write(tmp_path, cases)
    with pytest.raises(CaseFileError) as caught:
        load_case_file(path)
    assert caught.value.line == line, str(caught.value)
    assert message in caught.value.message
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_an_intent_without_any_time_is_a_case_file_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"policy: tiny.yaml\ncases:\n  - name: a\n    intent: {REFUND.replace('}}', '}')}\n"
                    "    expect: ALLOW\n".replace("params: {amount: 10}", "agent_id: a, agent_role: r, "
                                                    "environment: dev, params: {amount: 10}"))
    path.write_text(
        "policy: tiny.yaml\ncases:\n  - name: a\n"
        "    intent: {tool: t, action: read, target: 'a:b', agent_id: a, agent_role: r, environment: dev}\n"
        "    expect: ALLOW\n"
    )
    with pytest.raises(CaseFileError, match=r":4: the intent has no occurred_at"):
        load_case_file(path)


def test_a_case_file_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(CaseFileError, match="YAML mapping"):
        load_case_file(path)


def test_default_cases_path() -> None:
    assert default_cases_path("policies/examples/devops.yaml") == Path("policies/examples/cases/devops.yaml")


# --- running -----------------------------------------------------------------------------------------


def test_a_wrong_expectation_fails_with_intent_expected_actual_and_reasons(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
        - name: wrong
          intent: {tool: payments.refund, action: create, target: "payments:refunds", params: {amount: 75}}
          expect: ALLOW
          rules: [small-refund]
        """)
    case_file = load_case_file(path)
    [result] = run_case_file(case_file)
    assert not result.passed and result.failure is not None
    failure = result.failure
    assert failure.actual.decision is DecisionKind.REQUIRE_APPROVAL
    assert failure.expected.decision is DecisionKind.ALLOW
    text = failure.describe()
    assert "decision is REQUIRE_APPROVAL, expected ALLOW" in text
    assert "rules are ['big-refund'], expected ['small-refund']" in text
    assert '"amount": 75' in text and '"tool": "payments.refund"' in text
    assert "expected: ALLOW rules=['small-refund']" in text
    assert "actual: REQUIRE_APPROVAL rules=['big-refund']" in text
    assert "big-refund: Big refunds need a person." in text


def test_each_expectation_kind_can_fail(tmp_path: Path) -> None:
    path = _write(tmp_path, f"""\
        - name: reasons
          intent: {REFUND}
          expect: ALLOW
          reasons_contain: nothing like this
        - name: factors
          intent: {REFUND}
          expect: ALLOW
          factors: [burst]
        """)
    results = run_case_file(load_case_file(path))
    assert [r.failure.problems for r in results if r.failure] == [
        ("no reason contains 'nothing like this'",),
        ("risk factors ['burst'] missing (present: [])",),
    ]


def test_determining_is_checked_in_order(tmp_path: Path) -> None:
    path = _write(tmp_path, f"""\
        - name: the limit determines the 4th
          steps:
            - {{intent: {REFUND}, repeat: 3, expect: ALLOW, determining: [small-refund]}}
            - {{intent: {REFUND}, expect: BLOCK, rules: [small-refund, three-per-minute],
                determining: [three-per-minute]}}
        - name: wrong
          intent: {REFUND}
          expect: ALLOW
          determining: [big-refund]
        """)
    passed, failed = run_case_file(load_case_file(path))
    assert passed.passed and failed.failure is not None
    assert failed.failure.problems == ("determining is ['small-refund'], expected ['big-refund']",)
    assert "expected: ALLOW determining=['big-refund']" in failed.failure.describe()


def test_factors_absent_fails_when_the_factor_is_present(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(POLICY + "risk:\n  action_weights: {create: 0.1}\n")
    path = tmp_path / "c.yaml"
    path.write_text(HEADER + f"  - name: a\n    intent: {REFUND}\n    expect: ALLOW\n"
                             "    factors_absent: [action_type]\n")
    [result] = run_case_file(load_case_file(path))
    assert result.failure is not None
    assert result.failure.problems == ("risk factors ['action_type'] present, expected absent",)


def test_a_step_stops_at_the_first_copy_that_misses_and_names_it(tmp_path: Path) -> None:
    path = _write(tmp_path, f"""\
        - name: too many
          steps:
            - {{intent: {REFUND}, expect: ALLOW}}
            - {{intent: {REFUND}, repeat: 5, every: 1s, expect: ALLOW}}
        """)
    [result] = run_case_file(load_case_file(path))
    assert result.failure is not None
    assert (result.failure.step, result.failure.copy, result.decided) == (1, 2, 4)
    assert result.failure.actual.decision is DecisionKind.BLOCK
    assert "three-per-minute" in result.failure.actual.rules
    assert result.failure.describe().startswith("step 2, intent 3: decision is BLOCK, expected ALLOW")


def test_every_case_starts_with_fresh_state(tmp_path: Path) -> None:
    path = _write(tmp_path, f"""\
        - name: fill
          steps:
            - {{intent: {REFUND}, repeat: 3, expect: ALLOW}}
            - {{intent: {REFUND}, expect: BLOCK, rules: [small-refund, three-per-minute]}}
        - name: fresh
          steps:
            - {{intent: {REFUND}, repeat: 3, expect: ALLOW}}
        """)
    case_file = load_case_file(path)
    policy = load_policy(case_file.policy_path)
    assert [run_case(policy, case).passed for case in case_file.cases] == [True, True]


# --- the CLI -----------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_passes_on_an_example_with_its_default_cases() -> None:
    result = runner.invoke(app, ["test", "policies/examples/customer_support.yaml"])
    assert result.exit_code == 0, result.output
    assert "0 failed" in result.output


def test_cli_exits_1_and_shows_the_failure(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
        - name: wrong
          intent: {tool: payments.refund, action: create, target: "payments:refunds", params: {amount: 75}}
          expect: BLOCK
        """)
    result = runner.invoke(app, ["test", str(tmp_path / "tiny.yaml"), str(path)])
    assert result.exit_code == 1, result.output
    for text in ("FAIL", "wrong", "expected", "BLOCK", "REQUIRE_APPROVAL", "big-refund", '"amount": 75',
                 "Big refunds need a person.", "0 passed, 1 failed"):
        assert text in result.output


def test_cli_exits_2_on_a_bad_case_file_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "- name: a\n  intent: {tool: x}\n  expect: ALLOW\n  colour: red\n")
    result = runner.invoke(app, ["test", str(tmp_path / "tiny.yaml"), str(path)])
    assert result.exit_code == 2
    assert f"{path}:11: unknown field 'colour'" in result.output


def test_cli_exits_2_on_a_missing_default_case_file(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(POLICY)
    result = runner.invoke(app, ["test", str(tmp_path / "tiny.yaml")])
    assert result.exit_code == 2
    assert "cases/tiny.yaml" in result.output


def test_cli_exits_2_on_a_broken_policy(tmp_path: Path) -> None:
    path = _write(tmp_path, f"- name: a\n  intent: {REFUND}\n  expect: ALLOW\n")
    (tmp_path / "tiny.yaml").write_text(POLICY.replace("op: gt", "op: bigger"))
    result = runner.invoke(app, ["test", str(tmp_path / "tiny.yaml"), str(path)])
    assert result.exit_code == 2
    assert "tiny.yaml:11:" in result.output
