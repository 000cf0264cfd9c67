"""``sluicegate explain``: every entry, why it did not apply (the first failing condition with the value
seen), what determined the decision, and the engine's own decision."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from schemas import Intent
from sluicegate.cli import _register, app
from streams.engine import InMemoryState, compile_policy, decide, evaluate_intent, load_policy
from streams.engine.explain import explain
from streams.engine.loader import parse_yaml

DEMO = Path(__file__).parents[2] / "policies" / "demo.yaml"
POLICY = """\
policy: explained
default: BLOCK
schedules:
  office: {timezone: UTC, days: [mon, tue, wed, thu, fri], start: "09:00", end: "18:00"}
rules:
  - id: small-refund
    match: {tool: payments.refund, environment: production}
    when: {field: params.amount, op: lte, value: 50}
    decision: ALLOW
  - id: office-refund
    match: {tool: payments.refund}
    when:
      all:
        - {schedule: office}
        - {field: params.currency, op: eq, value: EUR}
    decision: REQUIRE_APPROVAL
  - id: no-staging
    match: {tool: payments.refund, environment: staging}
    decision: BLOCK
limits:
  - id: two-per-hour
    match: {tool: payments.refund}
    window: 1h
    count: 2
risk:
  action_weights: {create: 0.2}
  thresholds:
    - {at_least: 0.9, decision: BLOCK}
"""
SATURDAY = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def refund(amount: float, at: datetime = SATURDAY, n: int = 1, **params: object) -> Intent:
    return Intent(request_id=f"00000000-0000-4000-8000-{n:012d}", agent_id="support-1",
                  agent_role="support", environment="production", tool="payments.refund", action="create",
                  target="payments:refunds", params={"amount": amount, **params}, occurred_at=at)


def test_every_entry_with_the_first_failure_and_the_value_seen() -> None:
    policy = compile_policy(POLICY, "explained.yaml")
    _, lines = parse_yaml(POLICY, "explained.yaml")

    found = explain(policy, refund(120, currency="USD"), lines=lines)

    entries = {entry.id: entry for entry in found.entries}
    assert found.decision.decision.value == "BLOCK" and found.decision.determining == ("default",)
    assert entries["small-refund"].why == "params.amount lte 50 failed: value seen 120"
    assert entries["office-refund"].why.startswith("schedule office: Sat 12:00 UTC is outside mon,")
    assert entries["no-staging"].why == "match.environment: 'production' is not 'staging'"
    assert entries["two-per-hour"].why.startswith("0 of 2 already in 1h")
    assert entries["action_type"].applied and entries["action_type"].why == "+0.20: create"
    assert entries["risk>=0.9"].why == "score 0.20 < 0.9" and not entries["risk>=0.9"].applied
    assert entries["default"].determining and entries["default"].applied
    assert [entries[i].line for i in ("small-refund", "office-refund", "two-per-hour")] == [6, 10, 21]
    text = found.render()
    assert "- rule small-refund (line 6) [ALLOW]: params.amount lte 50 failed: value seen 120" in text
    assert text.splitlines()[-2].startswith("=> BLOCK, determined by default")


def test_a_failing_condition_inside_all_and_the_determining_entries() -> None:
    policy = compile_policy(POLICY, "explained.yaml")
    monday = SATURDAY + timedelta(days=2)

    found = explain(policy, refund(120, monday, currency="USD"))
    approval = explain(policy, refund(120, monday, currency="EUR"))
    missing = explain(policy, refund(120, monday))

    assert {e.id: e.why for e in found.entries}["office-refund"] == \
        "params.currency eq 'EUR' failed: value seen 'USD'"
    assert approval.decision.decision.value == "REQUIRE_APPROVAL"
    assert [e.id for e in approval.entries if e.determining] == ["office-refund"]
    errored = {e.id: e for e in missing.entries}["office-refund"]  # never grants: BLOCKs, naming itself
    assert errored.determining
    assert errored.why == "office-refund: evaluation error: params.currency is missing"


def test_a_full_limit_with_history_is_what_the_engine_says() -> None:
    policy, state = compile_policy(POLICY), InMemoryState()
    for n in range(2):
        decide(policy, state, refund(10, SATURDAY + timedelta(minutes=n), n=n + 1))
    third = refund(10, SATURDAY + timedelta(minutes=5), n=3)

    found = explain(policy, third, state)

    engine = evaluate_intent(policy, state, third).decision
    assert found.decision == engine and engine.decision.value == "BLOCK"
    limit = {e.id: e for e in found.entries}["two-per-hour"]
    assert limit.applied and limit.determining and "2 actions already in 1h" in limit.why
    assert {e.id: e for e in found.entries}["small-refund"].applied


def test_explain_command_readable_and_json(tmp_path: Path) -> None:
    _register()
    intent = refund(120)
    runner = CliRunner()
    history = tmp_path / "history.jsonl"
    history.write_text("".join(refund(10, SATURDAY - timedelta(minutes=n), n=10 + n).model_dump_json() + "\n"
                               for n in range(3)))

    text = runner.invoke(app, ["explain", "--policy", str(DEMO)], input=intent.model_dump_json())
    as_json = runner.invoke(app, ["explain", "--policy", str(DEMO), "--json", "--history", str(history)],
                            input=intent.model_dump_json())
    bad = runner.invoke(app, ["explain", "--policy", str(DEMO)], input="{}")

    assert text.exit_code == 0, text.output
    assert "* rule support-refund-over-50-needs-approval (line 34) [REQUIRE_APPROVAL]" in text.stdout
    assert "params.amount lte 50 failed: value seen 120" in text.stdout
    body = json.loads(as_json.stdout)
    replayed = InMemoryState()
    for line in history.read_text().splitlines():
        decide(load_policy(DEMO), replayed, Intent.model_validate_json(line))
    assert body["decision"] == evaluate_intent(load_policy(DEMO), replayed, intent).decision.decision.value
    limit = next(e for e in body["entries"] if e["id"] == "refunds-per-agent-per-10m")
    assert limit["why"].startswith("3 of 20 already in 10m")
    assert bad.exit_code == 2
