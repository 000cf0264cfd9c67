"""``sluicegate policy diff`` on the demo fleet's traffic between ``policies/demo.yaml`` and a stricter
copy: the flips it reports are exactly those of two ``sluicegate evaluate`` replays, from a file and from
the audit in ClickHouse; its exit codes gate CI."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from typer.testing import CliRunner

from consumers.audit_rows import COLUMNS, arrow_stream, row, to_arrow
from consumers.audit_store import ClientStore
from consumers.backtest import audited_intents
from consumers.policy_diff import diff
from infra.clickhouse.migrate import migrate
from schemas import AuditEventType, AuditRecord, Decision, Intent
from sluicegate.cli import _register, app
from sluicegate.demo.fleet import FleetSimulator, build_fleet
from streams.engine import InMemoryState, decide, load_policy

DEMO = Path(__file__).parents[2] / "policies" / "demo.yaml"
TIGHTER = {  # refunds between 20 and 50 fall to the default BLOCK; scaling in dev and staging needs on-call
    "    when: {field: params.amount, op: lte, value: 50}\n    decision: ALLOW":
        "    when: {field: params.amount, op: lte, value: 20}\n    decision: ALLOW",
    'environment: [dev, staging]}\n    decision: ALLOW':
        'environment: [dev, staging]}\n    decision: REQUIRE_APPROVAL\n    approval: {group: on-call}',
}
CALLS = 1500


@pytest.fixture(scope="module")
def stricter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = DEMO.read_text()
    for old, new in TIGHTER.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path_factory.mktemp("diff") / "stricter.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Intent], Path]:
    """The demo fleet's calls over the last two hours (5 per simulated second), and as a JSON-lines file."""
    fleet = FleetSimulator(build_fleet(60), seed=11)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    intents = []
    for index in range(CALLS):
        at = start + timedelta(milliseconds=200 * index)
        call = fleet.next_call(at)
        agent = call.agent
        intents.append(Intent(
            request_id=f"00000000-0000-4000-8000-{index:012d}", agent_id=agent.agent_id,
            agent_role=agent.role, environment=agent.environment, agent_owner=agent.owner, tool=call.tool,
            action=call.action, target=call.target, params=call.params, occurred_at=call.occurred_at or at,
        ))
    intents.sort(key=lambda intent: intent.occurred_at)
    path = tmp_path_factory.mktemp("diff") / "intents.jsonl"
    path.write_text("".join(intent.model_dump_json() + "\n" for intent in intents))
    return intents, path


def _evaluate(policy: Path, intents: Path) -> list[Decision]:
    _register()
    result = CliRunner().invoke(app, ["evaluate", "--policy", str(policy), "--input", str(intents)])
    assert result.exit_code == 0, result.output
    return [Decision.model_validate_json(line) for line in result.stdout.splitlines()]


def _expected(stricter: Path, path: Path) -> Counter[str]:
    """Every decision pair, from two replays through ``sluicegate evaluate``."""
    before, after = _evaluate(DEMO, path), _evaluate(stricter, path)
    return Counter(f"{b.decision.value}->{a.decision.value}" for b, a in zip(before, after, strict=True))


def _diff(*args: str) -> tuple[int, str]:
    _register()
    result = CliRunner().invoke(app, ["policy", "diff", *args])
    return result.exit_code, result.stdout


def test_diff_of_a_file_reports_the_flips_of_two_evaluate_replays(
    stricter: Path, traffic: tuple[list[Intent], Path],
) -> None:
    _, path = traffic
    expected = _expected(stricter, path)

    code, out = _diff(str(DEMO), str(stricter), "--intents", str(path), "--json")

    assert code == 0, out
    report = json.loads(out)
    assert report["pairs"] == dict(expected)
    assert report["compared"] == CALLS
    flips = {kind: n for kind, n in expected.items() if kind.split("->")[0] != kind.split("->")[1]}
    assert report["flips"] == flips and flips["ALLOW->BLOCK"] > 0 and flips["ALLOW->REQUIRE_APPROVAL"] > 0
    assert set(report["by_rule"]) >= {"default", "devops-scale-outside-production"}
    assert report["approvals_added"] == {"on-call": flips["ALLOW->REQUIRE_APPROVAL"]}
    assert sum(report["by_tool"].values()) == sum(flips.values())
    assert {e["kind"] for examples in report["examples"].values() for e in examples} == set(flips)


def test_diff_exit_codes_gate_a_pull_request(stricter: Path, traffic: tuple[list[Intent], Path]) -> None:
    _, path = traffic
    assert _diff(str(DEMO), str(stricter), "--intents", str(path), "--fail-on-flip", "ALLOW->BLOCK")[0] == 1
    assert _diff(str(DEMO), str(stricter), "--intents", str(path), "--fail-on-flip", "*->ALLOW",
                 "--fail-on-flip", "BLOCK->REQUIRE_APPROVAL")[0] == 0
    assert _diff(str(DEMO), str(DEMO), "--intents", str(path), "--fail-on-flip", "*->*")[0] == 0
    assert _diff(str(DEMO), str(stricter), "--intents", str(path), "--fail-on-flip", "ALLOW-BLOCK")[0] == 2
    broken = path.with_name("broken.yaml")
    broken.write_text("policy: x\nrules: [{id: a}]\n")
    assert _diff(str(DEMO), str(broken), "--intents", str(path))[0] == 2
    code, out = _diff(str(DEMO), str(stricter), "--intents", str(path))
    assert code == 0 and "ALLOW->BLOCK" in out and "on-call" in out


@pytest.mark.integration
def test_diff_over_the_audit_replays_what_was_decided(
    stricter: Path, traffic: tuple[list[Intent], Path], clickhouse_client: Client, unique_name: str,
) -> None:
    """The demo's decisions stored in ClickHouse as the sink stores them, replayed from there."""
    intents, path = traffic
    migrate(clickhouse_client, unique_name)
    live, state, rows = load_policy(DEMO), InMemoryState(), []
    for offset, intent in enumerate(intents):
        decision = decide(live, state, intent)
        record = AuditRecord(event_id=f"{intent.request_id}:decision:final",
                             event_type=AuditEventType.DECISION, event_time=intent.occurred_at,
                             request_id=intent.request_id, intent=intent, decision=decision)
        rows.append(row(record, ("audit", 0, offset)))
    clickhouse_client.raw_insert(f"{unique_name}.audit_events", list(COLUMNS), arrow_stream([to_arrow(rows)]),
                                 fmt="ArrowStream")
    until = datetime.now(UTC) + timedelta(minutes=1)  # the fleet backdates some deploys by about a day
    history = [a.intent for a in audited_intents(ClientStore(clickhouse_client), unique_name,
                                                   until - timedelta(days=3), until)]

    table = diff(live, load_policy(stricter), history)

    expected = _expected(stricter, path)
    assert {f"{b.value}->{a.value}": n for (b, a), n in table.pairs.items()} == dict(expected)
