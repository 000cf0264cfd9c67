"""``sluicegate policy check`` and ``sluicegate evaluate`` through the real command line app."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sluicegate.cli import _register, app

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"
T0 = datetime(2025, 3, 3, 10, tzinfo=UTC)
_register()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _line(tool: str, agent: str, minutes: float, **params: Any) -> str:
    target = "bank:payments" if tool == "payments.create" else "payments:refunds"
    return json.dumps({
        "request_id": str(uuid.uuid4()), "agent_id": agent, "agent_role": "finance",
        "environment": "production", "tool": tool, "action": "create", "target": target,
        "params": params, "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat(),
    })


def test_check_prints_rule_count_and_version(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("policy: ok\nrules:\n  - {id: a, decision: ALLOW}\n  - {id: b, decision: BLOCK}\n")
    result = runner.invoke(app, ["policy", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "2 rules" in result.output and "version sha256:" in result.output


def test_check_prints_errors_with_lines_and_exits_1(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("policy: bad\nrules:\n  - id: a\n    decision: ALLOW\n"
                    "    when: {field: tool, op: near, value: x}\n")
    result = runner.invoke(app, ["policy", "check", str(path)])
    assert result.exit_code == 1
    assert f"{path}:5: rules.0.when.op: Input should be" in result.output


def test_evaluate_the_51st_transaction_in_an_hour(runner: CliRunner, tmp_path: Path) -> None:
    lines = [_line("payments.create", "fin-1", minute, amount=10) for minute in range(51)]
    lines.insert(10, "this is not json")
    lines.append(_line("payments.create", "fin-2", 51, amount=10))  # another agent has its own budget
    lines.append(_line("payments.create", "fin-1", 60.5, amount=10))  # first one left the hour: room again
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n\n")
    policy = str(EXAMPLES / "financial.yaml")
    result = runner.invoke(app, ["evaluate", "--policy", policy, "--input", str(source)])
    assert result.exit_code == 0, result.output
    decisions = [json.loads(line) for line in result.output.splitlines()]
    assert len(decisions) == 54
    assert decisions[10]["decision"] == "BLOCK" and decisions[10]["reasons"][0].startswith("invalid_intent: ")
    kinds = [d["decision"] for i, d in enumerate(decisions) if i != 10]
    assert kinds[:50] == ["ALLOW"] * 50
    assert kinds[50:] == ["BLOCK", "ALLOW", "ALLOW"]
    assert "transactions-per-agent-per-hour" in decisions[51]["rules"]
    assert [d["request_id"] for i, d in enumerate(decisions) if i != 10] == [
        json.loads(line)["request_id"] for i, line in enumerate(lines) if i != 10
    ]


def test_evaluate_names_what_determined_each_decision(runner: CliRunner, tmp_path: Path) -> None:
    """51 payments of 10 by one agent inside an hour: the rule allows the first 50, the limit blocks the
    51st; ``determining`` names each, while ``rules`` names everything that applied."""
    source = tmp_path / "payments.jsonl"
    source.write_text("".join(_line("payments.create", "fin-1", minute, amount=10) + "\n"
                              for minute in range(51)))
    policy = str(EXAMPLES / "financial.yaml")
    result = runner.invoke(app, ["evaluate", "--policy", policy, "--input", str(source)])
    assert result.exit_code == 0, result.output
    decisions = [json.loads(line) for line in result.output.splitlines()]
    assert len(decisions) == 51
    first, last = decisions[0], decisions[50]
    assert (first["decision"], first["determining"]) == ("ALLOW", ["payment-under-1000"])
    assert (last["decision"], last["determining"]) == ("BLOCK", ["transactions-per-agent-per-hour"])
    assert last["rules"] == ["payment-under-1000", "transactions-per-agent-per-hour"]
    assert all(d["determining"] == ["payment-under-1000"] for d in decisions[:50])


def test_evaluate_the_refund_that_crosses_the_fleet_budget(runner: CliRunner) -> None:
    amounts = [100] * 49 + [60, 40, 0.01]  # 4,900 + 60 = 4,960; + 40 = 5,000 exactly; + 0.01 is past it
    lines = [_line("payments.refund", f"agent-{i % 7}", i * 10, amount=a) for i, a in enumerate(amounts)]
    result = runner.invoke(app, ["evaluate", "--policy", str(EXAMPLES / "fleet_budget.yaml")],
                           input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    decisions = [json.loads(line) for line in result.output.splitlines()]
    assert [d["decision"] for d in decisions] == ["ALLOW"] * 51 + ["REQUIRE_APPROVAL"]
    assert decisions[-1]["rules"] == ["refund-up-to-100", "fleet-refunds-5000-per-24h"]


def test_evaluate_rejects_a_broken_policy(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("policy: bad\nlimits:\n  - {id: l, count: 3}\n")
    result = runner.invoke(app, ["evaluate", "--policy", str(path)], input="")
    assert result.exit_code == 1
    assert f"{path}:3: missing field 'window'" in result.output
