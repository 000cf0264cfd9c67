"""Static analysis in ``policy check``: planted mistakes found on their lines, none in the examples."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sluicegate.cli import _register, app
from streams.engine.analysis import Finding, analyse

ROOT = Path(__file__).parents[2]
PLANTED = """\
policy: planted
default: BLOCK
rules:
  - id: refunds
    match: {tool: payments.refund, environment: production}
    when: {field: params.amount, op: lte, value: 100}
    decision: ALLOW
  - id: contradictory
    match: {tool: payments.refund}
    when:
      all:
        - {field: params.amount, op: gt, value: 500}
        - {field: params.amount, op: lt, value: 100}
    decision: ALLOW
  - id: staging-only-in-production
    match: {tool: deploy.*, environment: staging}
    when: {field: environment, op: eq, value: production}
    decision: ALLOW
  - id: export-read
    match: {tool: crm.export, action: read, target: "crm:accounts"}
    decision: ALLOW
  - id: no-exports
    match: {tool: "crm.*"}
    decision: BLOCK
  - id: big-refunds
    match: {tool: payments.refund}
    when: {field: params.amount, op: gt, value: 100}
    decision: REQUIRE_APPROVAL
    approval:
      group: refund-leads
limits:
  - id: deletes-per-hour
    match: {tool: db.delete}
    window: 1h
    count: 5
  - id: refunds-per-hour
    match: {tool: payments.refund}
    window: 1h
    count: 5
"""
REVIEWERS = "groups:\n  support-leads: [lena]\n  empty-group: []\n"


def _line(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def test_each_planted_mistake_is_found_on_its_line() -> None:
    findings = analyse(PLANTED, "planted.yaml", groups={"support-leads"})

    by_code = {(f.code, f.line) for f in findings}
    assert by_code == {
        ("never-applies", _line(PLANTED, "op: lt, value: 100")),
        ("never-applies", _line(PLANTED, "op: eq, value: production")),
        ("covered-allow", _line(PLANTED, "id: export-read")),
        ("limit-never-counts", _line(PLANTED, "id: deletes-per-hour")),
        ("unknown-reviewer-group", _line(PLANTED, "group: refund-leads")),
    }
    text = {f.code + ":" + f.message for f in findings}
    assert any("contradictory" in t and "params.amount lt 100" in t and "gt 500" in t for t in text)
    assert any("export-read" in t and "no-exports" in t for t in text)
    assert str(findings[0]).startswith(f"planted.yaml:{findings[0].line}: warning: ")


def test_without_a_reviewers_file_groups_are_not_checked() -> None:
    assert all(f.code != "unknown-reviewer-group" for f in analyse(PLANTED, "planted.yaml"))


@pytest.mark.parametrize("text", [
    "policy: p\nrules:\n"
    "  - {id: a, match: {tool: x}, when: {field: params.n, op: gt, value: 5}, decision: ALLOW}\n"
    "  - {id: b, match: {tool: x}, when: {field: params.n, op: lt, value: 9}, decision: BLOCK}\n",
    "policy: p\nrules:\n  - {id: a, match: {tool: x}, when: {any: [{field: tool, op: eq, value: y}]}, "
    "decision: ALLOW}\n",
    "policy: p\nrules:\n  - {id: a, when: {all: [{field: params.n, op: gte, value: 5}, "
    "{field: params.n, op: lte, value: 5}]}, decision: ALLOW}\n",
    "policy: p\nrules:\n  - {id: a, when: {field: params.n, op: eq, value: 1, default: 2}, decision: ALLOW}\n"
    "  - {id: b, when: {not: {field: params.m, op: exists, value: false}}, decision: ALLOW}\n",
])
def test_what_can_apply_is_not_reported(text: str) -> None:
    assert analyse(text, "ok.yaml") == []


@pytest.mark.parametrize("path", sorted([ROOT / "policies" / "demo.yaml",
                                         *(ROOT / "policies" / "examples").glob("*.yaml")]))
def test_the_shipped_policies_have_no_findings(path: Path) -> None:
    assert analyse(path.read_text(), str(path)) == []


def test_policy_check_warns_and_strict_fails(tmp_path: Path) -> None:
    _register()
    policy, reviewers = tmp_path / "planted.yaml", tmp_path / "reviewers.yaml"
    policy.write_text(PLANTED)
    reviewers.write_text(REVIEWERS)
    runner = CliRunner()

    lenient = runner.invoke(app, ["policy", "check", str(policy), "--reviewers", str(reviewers)])
    strict = runner.invoke(app, ["policy", "check", str(policy), "--strict"])

    assert lenient.exit_code == 0, lenient.output
    assert f"{policy}:{_line(PLANTED, 'group: refund-leads')}: warning:" in lenient.stdout
    assert "OK: policy planted" in lenient.stdout and "5 warnings" in lenient.stdout
    assert strict.exit_code == 1 and "unknown-reviewer-group" not in strict.stdout
    clean = runner.invoke(app, ["policy", "check", str(ROOT / "policies" / "demo.yaml"), "--strict"])
    assert clean.exit_code == 0 and "warning" not in clean.stdout
    assert Finding("f", 3, "c", "m").__str__() == "f:3: warning: m [c]"
