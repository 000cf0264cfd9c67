"""A shadow policy on a running worker and the real broker: published during traffic, it changes no
enforced decision, its own decisions (on state of its own) are in the audit, ``shadow-report`` over
them in ClickHouse equals a hand count, and ``promote`` makes it the enforced policy."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client as ClickHouse

from consumers.audit_rows import COLUMNS, arrow_stream, row, to_arrow
from consumers.audit_store import ClientStore
from consumers.shadow_report import shadow_report
from infra.clickhouse.migrate import migrate
from schemas import ACTIVE_POLICY_KEY, AuditRecord, Decision, DecisionKind, Intent
from sluicegate.trust import KeyRing, SignerCredential
from streams.engine import InMemoryState, compile_policy, decide
from streams.metrics import Metrics
from streams.policy_source import (
    PROMOTED,
    SHADOW,
    SHADOW_POLICY_KEY,
    Envelope,
    PolicySource,
    promote,
    publish,
)
from tests.streams.harness import Client, WorkerProcess, make_intent

ALLOW, APPROVAL, BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK
ACTIVE = """
policy: refunds
default: BLOCK
rules:
  - id: small-refund
    match: {tool: payments.refund}
    when: {field: params.amount, op: lte, value: 100}
    decision: ALLOW
  - id: large-refund
    match: {tool: payments.refund}
    when: {all: [{field: params.amount, op: gt, value: 100}, {field: params.amount, op: lte, value: 200}]}
    decision: REQUIRE_APPROVAL
    approval: {group: support-leads}
limits:
  - id: refunds-per-agent
    match: {tool: payments.refund}
    key: [agent]
    window: 1h
    count: 5
    decision: BLOCK
"""
SHADOW_POLICY = """
policy: refunds-stricter
default: BLOCK
rules:
  - id: small-refund
    match: {tool: payments.refund}
    when: {field: params.amount, op: lte, value: 50}
    decision: ALLOW
  - id: medium-refund
    match: {tool: payments.refund}
    when: {all: [{field: params.amount, op: gt, value: 50}, {field: params.amount, op: lte, value: 200}]}
    decision: REQUIRE_APPROVAL
    approval: {group: finance-leads}
limits:
  - id: shadow-refunds-per-agent
    match: {tool: payments.refund}
    key: [agent]
    window: 1h
    count: 3
    decision: BLOCK
"""
AMOUNTS = (10, 60, 120, 30, 250, 40, 80, 20, 5, 45)
AGENTS = 6


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(kafka_bootstrap, "sh" + secrets.token_hex(5), tmp_path_factory.mktemp("shadow"))
    asyncio.run(publish(kafka_bootstrap, worker.names.policies, ACTIVE, "active.yaml"))
    with worker.running():
        yield worker


def _shadow_status(worker: WorkerProcess) -> Any:
    return json.loads(worker.get("/status")[1])["shadow_version"]


def _first_decisions(audit: list[dict[str, Any]], kind: str) -> dict[str, Decision]:
    """The first audited decision of each request among the events of ``kind``."""
    found: dict[str, Decision] = {}
    for event in audit:
        if event["event_type"] == kind:
            found.setdefault(event["request_id"], Decision.model_validate(event["decision"]))
    return found


def _replay(policy_text: str, intents: list[Intent]) -> list[DecisionKind]:
    policy, state = compile_policy(policy_text), InMemoryState()
    return [decide(policy, state, intent).decision for intent in intents]


@pytest.mark.integration
async def test_shadow_during_traffic_then_promote(
    worker: WorkerProcess, clickhouse_client: ClickHouse, unique_name: str,
) -> None:
    t0 = datetime.now(UTC) - timedelta(minutes=30)
    agents = [f"shadow-{secrets.token_hex(3)}-{n}" for n in range(AGENTS)]
    sent: list[Intent] = []

    async with Client(worker.bootstrap, worker.prefix) as client:
        async def traffic() -> None:
            for i in range(100_000):
                agent = agents[i % AGENTS]
                intent = make_intent(agent, params={"amount": AMOUNTS[(i // AGENTS) % len(AMOUNTS)]},
                                     occurred_at=t0 + timedelta(seconds=i))
                sent.append(intent)
                await client.send(intent)
                await asyncio.sleep(0.005)

        task = asyncio.create_task(traffic())
        try:
            await client.wait_for(lambda: len(client.decisions) >= 2 * AGENTS, what="traffic flowing")
            shadow = (await publish(worker.bootstrap, worker.names.policies, SHADOW_POLICY, "shadow.yaml",
                                    role=SHADOW)).policy
            await client.wait_for(lambda: _first_decisions(client.audit, "shadow_decision"),
                                  what="a shadow decision")
            boundary = len(sent)  # sent after the shadow was seen deciding: decided after it arrived
            await client.wait_for(lambda: len(sent) >= boundary + 60, what="60 more intents")
        finally:
            task.cancel()
        await client.wait_for(lambda: all(i.request_id in client.decisions for i in sent),
                              what="every decision")
        await client.wait_for(
            lambda: {str(i.request_id) for i in sent} <= set(_first_decisions(client.audit, "decision"))
            and {str(i.request_id) for i in sent[boundary:]}
            <= set(_first_decisions(client.audit, "shadow_decision")), what="the audit")
        assert _shadow_status(worker) == shadow.version
        enforced = _first_decisions(client.audit, "decision")
        shadowed = _first_decisions(client.audit, "shadow_decision")

        # Enforced decisions are what the active policy alone decides.
        assert [enforced[str(i.request_id)].decision for i in sent] == _replay(ACTIVE, sent)
        assert {enforced[str(i.request_id)].policy_version for i in sent} != {shadow.version}
        # The shadow decided each agent's intents from the one where it arrived, on state of its own
        # (its limit counts its own ALLOWs: 3 per hour, not the active 5).
        for agent in agents:
            mine = [i for i in sent if i.agent_id == agent]
            first = next(n for n, i in enumerate(mine) if str(i.request_id) in shadowed)
            assert all(str(i.request_id) in shadowed for i in mine[first:])
            assert [shadowed[str(i.request_id)].decision for i in mine[first:]] == \
                _replay(SHADOW_POLICY, mine[first:])
        assert {d.policy_version for d in shadowed.values()} == {shadow.version}
        assert any(d.determining == ("shadow-refunds-per-agent",) for d in shadowed.values())

        # shadow-report from ClickHouse equals a hand count of the audit.
        migrate(clickhouse_client, unique_name)
        records = [AuditRecord.model_validate(event) for event in client.audit]
        rows = [row(record, ("audit", 0, offset)) for offset, record in enumerate(records)]
        clickhouse_client.raw_insert(f"{unique_name}.audit_events", list(COLUMNS),
                                     arrow_stream([to_arrow(rows)]), fmt="ArrowStream")
        report = shadow_report(ClientStore(clickhouse_client), unique_name, timedelta(hours=1))
        pairs = Counter((enforced[r].decision, d.decision) for r, d in shadowed.items())
        by_rule: Counter[str] = Counter()
        added: Counter[str] = Counter()
        by_agent: dict[str, int] = defaultdict(int)
        for request_id, decision in shadowed.items():
            if decision.decision is not enforced[request_id].decision:
                by_rule.update(decision.determining)
                by_agent[decision.agent_id] += 1
                if decision.decision is APPROVAL:
                    added["finance-leads"] += 1
        assert report.pairs == pairs and sum(report.flips.values()) > 0
        assert report.by_rule == by_rule and dict(report.by_agent) == dict(by_agent)
        assert report.approvals_added == added and added["finance-leads"] > 0
        assert report.after_version == shadow.version
        times = [e["event_time"] for e in client.audit if e["event_type"] == "shadow_decision"]
        span_h = max((datetime.fromisoformat(max(times)) - datetime.fromisoformat(min(times))),
                     timedelta(minutes=1)) / timedelta(hours=1)
        assert report.approvals_per_hour()["finance-leads"] == pytest.approx(added["finance-leads"] / span_h,
                                                                             abs=1e-3)

        # promote: the shadow is enforced, signed and audited as a publish; no shadow any more.
        promoted = await promote(worker.bootstrap, worker.names.policies, expect_version=shadow.version)
        assert promoted.policy.version == shadow.version
        await worker.wait_ready(policy_version=shadow.version)
        assert _shadow_status(worker) is None
        fresh = f"shadow-{secrets.token_hex(3)}-new"
        after = [await client.decide(make_intent(fresh, params={"amount": amount},
                                                 occurred_at=t0 + timedelta(hours=2, seconds=n)))
                 for n, amount in enumerate((30, 60))]
        assert [d.decision for d in after] == [ALLOW, APPROVAL]
        assert {d.policy_version for d in after} == {shadow.version}
        await client.wait_for(lambda: sum(e["event_type"] == "policy_published" for e in client.audit) >= 3,
                              what="the policy audit")
        published = [json.loads(e["note"]) for e in client.audit if e["event_type"] == "policy_published"]
        assert [p.get("role", "active") for p in published] == ["active", "shadow", "promoted"]
        assert published[2]["version"] == shadow.version
        assert published[2]["previous"] == published[0]["version"]
        assert not any(e["event_type"] == "shadow_decision" and e["intent"]["agent_id"] == fresh
                       for e in client.audit)


# -- signed shadows, without a broker -------------------------------------------------------------------


def _record(credential: SignerCredential, text: str, seq: int, role: str) -> tuple[bytes, list[Any]]:
    policy = compile_policy(text)
    envelope = Envelope(seq=seq, serial=seq, publisher=credential.name, published_at_ms=1_796_000_000_000,
                        version=policy.version, previous=None, role=role)
    value = envelope.line() + text.encode()
    return value, credential.headers(value)


def test_a_signed_shadow_is_taken_as_shadow_only_and_promote_ends_it() -> None:
    ring = KeyRing.generate("k1")
    credential = SignerCredential.issue(ring, "publisher", "ci")
    workers = PolicySource("unused:9092", "p.policies", Metrics(), ring=ring)
    active, shadow = _record(credential, ACTIVE, 1, "active"), _record(credential, SHADOW_POLICY, 2, SHADOW)

    assert workers.offer(*active[:1], 0, active[1])
    assert not workers.offer(shadow[0], 1, shadow[1], key=ACTIVE_POLICY_KEY)  # re-keyed: refused
    assert workers.current is not None and workers.current.name == "refunds" and workers.shadow is None
    assert workers.offer(shadow[0], 2, shadow[1], key=SHADOW_POLICY_KEY)
    assert workers.shadow is not None and workers.shadow.name == "refunds-stricter"
    assert workers.current.name == "refunds"  # enforced: still the active one
    assert not workers.offer(shadow[0], 3, shadow[1], key=SHADOW_POLICY_KEY)  # replayed: stale seq
    promoted = _record(credential, SHADOW_POLICY, 3, PROMOTED)
    assert not workers.offer(promoted[0], 4, promoted[1], key=SHADOW_POLICY_KEY)
    assert workers.offer(promoted[0], 5, promoted[1], key=ACTIVE_POLICY_KEY)
    assert workers.current.name == "refunds-stricter" and workers.shadow is None
    notes = [json.loads(e.note or "") for e in workers.audit_events if e.event_type == "policy_published"]
    assert [note.get("role", "active") for note in notes] == ["active", "shadow", "promoted"]
    refused = [e.note or "" for e in workers.audit_events if e.event_type == "security"]
    assert len(refused) == 3 and "a shadow policy under the key b'active'" in refused[0]
