"""The SDK against a real broker, with a tiny in-test responder standing in for the worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas import AuditEventType, AuditRecord, Decision, DecisionKind, ExecutionOutcome, Intent, TopicNames
from sluicegate import (
    GOVERNANCE_UNAVAILABLE,
    ActionBlocked,
    ApprovalExpired,
    Backoff,
    CircuitBreaker,
    Gate,
    GovernanceUnavailable,
    Settings,
    SyncGate,
    partition_for,
)
from sluicegate.transport import KafkaTransport
from tests.sdk.kafka_helpers import PARTITIONS, Responder, create_topics, read_topic, send_raw

pytestmark = pytest.mark.integration

REFUND: dict[str, Any] = {"tool": "payments.refund", "action": "create", "target": "payments:refunds"}
DEADLINE_S = 2.0


def answer(intent: Intent, kind: DecisionKind, **fields: object) -> Decision:
    values: dict[str, object] = {"request_id": intent.request_id, "agent_id": intent.agent_id,
                                 "decision": kind, "decided_at": datetime.now(UTC), "rules": ("r1",)}
    values.update(fields)
    return Decision.model_validate(values)


def by_amount(intent: Intent) -> list[Decision]:
    """ALLOW up to 50, REQUIRE_APPROVAL (pending, 0.3 s deadline, never approved) up to 500, else BLOCK."""
    amount = intent.params.get("amount", 0)
    assert isinstance(amount, int | float)
    if amount <= 50:
        return [answer(intent, DecisionKind.ALLOW)]
    if amount <= 500:
        deadline = datetime.now(UTC) + timedelta(seconds=0.3)
        return [answer(intent, DecisionKind.REQUIRE_APPROVAL, final=False, approval_deadline_at=deadline)]
    reasons = (f"refund of {amount} over 500",)
    return [answer(intent, DecisionKind.BLOCK, reasons=reasons, rules=("refund-max",))]


@pytest.fixture
async def topics(kafka_bootstrap: str, unique_name: str) -> TopicNames:
    names = TopicNames(unique_name)
    await create_topics(kafka_bootstrap, names)
    return names


@pytest.fixture
def settings(kafka_bootstrap: str, topics: TopicNames) -> Settings:
    return Settings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topics.prefix,
                    decision_timeout_s=DEADLINE_S, partitions=PARTITIONS)


@pytest.fixture
async def responder(kafka_bootstrap: str, topics: TopicNames) -> AsyncIterator[Responder]:
    async with Responder(kafka_bootstrap, topics, by_amount) as running:
        yield running


def new_gate(settings: Settings, **options: object) -> Gate:
    return Gate(settings, agent_id="sup-1", agent_role="support", environment="production",
                **options)  # type: ignore[arg-type]


async def test_allow_block_and_pending_timeout_end_to_end(settings: Settings, responder: Responder) -> None:
    async with new_gate(settings) as gate:
        assert gate.connected
        allowed = await gate.check(**REFUND, params={"amount": 20})
        blocked = await gate.check(**REFUND, params={"amount": 900})
        expired = await gate.check(**REFUND, params={"amount": 100})
    assert allowed.decision is DecisionKind.ALLOW and allowed.rules == ("r1",)
    assert blocked.decision is DecisionKind.BLOCK and blocked.reasons == ("refund of 900 over 500",)
    assert expired.decision is DecisionKind.BLOCK and expired.reasons[0].startswith("approval_expired")
    asked = [allowed.request_id, blocked.request_id, expired.request_id]
    assert [i.request_id for i in responder.seen] == asked


async def test_guard_runs_or_not_and_publishes_outcomes(
    kafka_bootstrap: str, settings: Settings, topics: TopicNames, responder: Responder
) -> None:
    ran: list[float] = []
    async with new_gate(settings) as gate:

        @gate.guard(**REFUND, params=lambda amount: {"amount": amount})
        async def refund(amount: float) -> float:
            ran.append(amount)
            if amount == 13:
                raise ValueError("unlucky")
            return amount

        assert await refund(10) == 10
        with pytest.raises(ValueError, match="unlucky"):
            await refund(13)
        with pytest.raises(ActionBlocked) as blocked:
            await refund(1000)
        with pytest.raises(ApprovalExpired):
            await refund(200)
    assert ran == [10, 13]
    assert blocked.value.rules == ("refund-max",)
    records = await read_topic(kafka_bootstrap, topics.outcomes, 2)
    outcomes = [ExecutionOutcome.model_validate_json(value) for _, value in records]
    assert {key for key, _ in records} == {b"sup-1"}
    assert sorted((o.status.value, o.error) for o in outcomes) == [
        ("error", "ValueError: unlucky"), ("success", None)]
    assert {o.request_id for o in outcomes} == {i.request_id for i in responder.seen[:2]}


async def test_no_decision_is_missed_when_answers_are_immediate(
    settings: Settings, responder: Responder
) -> None:
    """Every call registers and positions its partition before publishing: 200 concurrent new agents."""
    async with Gate(settings, agent_role="support", environment="dev") as gate:
        decisions = await asyncio.gather(*(
            gate.check(**REFUND, params={"amount": 1}, agent_id=f"agent-{n}") for n in range(200)
        ))
        again = await asyncio.gather(*(
            gate.check(**REFUND, params={"amount": 1}, agent_id=f"agent-{n}") for n in range(200)
        ))
    assert all(d.decision is DecisionKind.ALLOW for d in decisions + again), [
        d.reasons for d in decisions + again if d.decision is not DecisionKind.ALLOW][:3]
    assert len({d.request_id for d in decisions + again}) == 400


async def test_a_gate_reads_only_the_partitions_of_its_agents(
    kafka_bootstrap: str, settings: Settings, topics: TopicNames, responder: Responder
) -> None:
    agents = [f"fleet-{n}" for n in range(400)]
    mine = [a for a in agents if partition_for(a, PARTITIONS) in (0, 1)][:100]
    others = [a for a in agents if partition_for(a, PARTITIONS) in (2, 3)][:50]
    async with Gate(settings, agent_role="support", environment="dev") as gate, \
            Gate(settings, agent_role="support", environment="dev") as neighbour:
        await asyncio.gather(*(neighbour.check(**REFUND, agent_id=a) for a in others))
        decisions = await asyncio.gather(*(gate.check(**REFUND, agent_id=a) for a in mine))
        await asyncio.gather(*(neighbour.check(**REFUND, agent_id=a) for a in others))
        transport = gate.transport
        assert isinstance(transport, KafkaTransport)
        assert transport.assigned_partitions == {0, 1}
        assert set(transport.demux.stats.records) <= {0, 1}
        assert transport.demux.stats.delivered == 100
    assert all(d.decision is DecisionKind.ALLOW for d in decisions)


async def test_no_worker_blocks_within_the_deadline_and_opens_the_breaker(settings: Settings) -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown=Backoff(initial_s=30, max_s=30, jitter=0))
    ran = []
    async with new_gate(settings, breaker=breaker) as gate:

        @gate.guard(**REFUND)
        async def refund() -> None:
            ran.append(True)

        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(GovernanceUnavailable) as info:
            await refund()
        elapsed = loop.time() - started
        assert DEADLINE_S <= elapsed < DEADLINE_S + 1.0
        assert info.value.reasons[0] == f"{GOVERNANCE_UNAVAILABLE}: no decision within 2 s"
        await gate.check(**REFUND, timeout_s=0.3)
        started = loop.time()
        decision = await gate.check(**REFUND)
        assert loop.time() - started < 0.1  # fails fast: nothing published
        assert decision.reasons[0].startswith(f"{GOVERNANCE_UNAVAILABLE}: circuit open")
    assert ran == []


async def test_foreign_and_garbage_decisions_block(
    kafka_bootstrap: str, settings: Settings, topics: TopicNames
) -> None:
    def foreign(intent: Intent) -> list[Decision]:
        return [answer(intent, DecisionKind.ALLOW, agent_id="impostor")]

    async with Responder(kafka_bootstrap, topics, foreign), new_gate(settings) as gate:
        await send_raw(kafka_bootstrap, topics.decisions, b"sup-1", b"{not json")
        decision = await gate.check(**REFUND)
    assert decision.decision is DecisionKind.BLOCK
    assert decision.reasons[0].startswith(f"{GOVERNANCE_UNAVAILABLE}: decision names agent 'impostor'")


async def test_fail_open_runs_and_writes_the_audit(
    kafka_bootstrap: str, settings: Settings, topics: TopicNames
) -> None:
    async with new_gate(settings) as gate:

        @gate.guard(tool="tickets.create", action="create", target="helpdesk:tickets", fail_open=True)
        async def open_ticket() -> str:
            return "T-1"

        assert await open_ticket() == "T-1"
    (key, value), (_, outcome_value) = await read_topic(kafka_bootstrap, topics.outcomes, 2)
    audit = AuditRecord.model_validate_json(value)  # reported for a worker to audit: agents don't write it
    assert audit.event_type is AuditEventType.FAIL_OPEN and audit.intent is not None
    assert key == audit.intent.agent_id.encode()
    assert ExecutionOutcome.model_validate_json(outcome_value).fail_open


def test_sync_gate_on_the_real_broker(kafka_bootstrap: str, settings: Settings, topics: TopicNames) -> None:
    async def with_responder() -> None:
        async with Responder(kafka_bootstrap, topics, by_amount) as running:
            await asyncio.to_thread(run_sync_agent)
            assert len(running.seen) == 2

    def run_sync_agent() -> None:
        with SyncGate(settings, agent_id="ops-1", agent_role="devops", environment="staging") as gate:

            @gate.guard(**REFUND, params=lambda amount: {"amount": amount})
            def refund(amount: int) -> int:
                return amount

            assert refund(5) == 5
            with pytest.raises(ActionBlocked):
                refund(5000)

    asyncio.run(with_responder())


async def test_a_new_partition_is_read_from_its_end_not_its_history(
    kafka_bootstrap: str, settings: Settings, topics: TopicNames, responder: Responder
) -> None:
    partition = partition_for("sup-1", PARTITIONS)
    for _ in range(5):
        await send_raw(kafka_bootstrap, topics.decisions, b"sup-1", b"{}", partition=partition)
    async with new_gate(settings) as gate:
        assert (await gate.check(**REFUND)).decision is DecisionKind.ALLOW
        transport = gate.transport
        assert isinstance(transport, KafkaTransport)
        assert transport.demux.stats.records[partition] == 1
