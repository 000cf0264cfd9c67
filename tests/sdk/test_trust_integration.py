"""The SDK with a credential against a real broker: someone with plain produce rights answering in the
worker's name gets nothing, a worker holding the agent's key gets through, and the intent on the topic
carries an authenticator a worker can check."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import pytest

from schemas import AuditEventType, AuditRecord, DecisionKind, Intent, TopicNames
from sluicegate import (
    GOVERNANCE_UNAVAILABLE,
    ActionBlocked,
    AgentCredential,
    Gate,
    GovernanceUnavailable,
    Settings,
    SyncGate,
    partition_for,
)
from sluicegate.transport import KafkaTransport
from sluicegate.trust import (
    AUTH_HEADER,
    KeyRing,
    agent_names,
    authenticator,
    check,
    header,
    split_authenticator,
)
from tests.sdk.fakes import Record, decision_for
from tests.sdk.kafka_helpers import PARTITIONS, Decide, Responder, create_topics, read_topic

pytestmark = pytest.mark.integration

DEADLINE_S = 1.5
WORKER_DELAY_S = 0.3
REFUND: dict[str, Any] = {"tool": "payments.refund", "action": "create", "target": "payments:refunds",
                          "params": {"amount": 9999}}
RING = KeyRing.generate("k1")
"""The deployment's keys: what the real workers hold."""
ATTACKER_RING = KeyRing.generate("k1")
"""Keys the SDK does not trust (same key id, to be sure the MAC is what is checked)."""
CREDENTIAL = AgentCredential.issue(RING, "sup-1", "support", "production", "team-a")


class Answer(Protocol):
    def __call__(self, intent: Intent, kind: DecisionKind, **fields: Any) -> Record: ...


def signed_with(ring: KeyRing) -> Answer:
    """Answers authenticated as a worker holding ``ring`` does: the agent key of the identity the intent
    claims, under every key id of the ring."""
    def answer(intent: Intent, kind: DecisionKind, **fields: Any) -> Record:
        value = decision_for(intent, kind, **fields).model_dump_json().encode()
        names = agent_names(intent.agent_id, intent.agent_role, intent.environment, intent.agent_owner)
        return Record(value, tuple((AUTH_HEADER, authenticator(kid, ring.derive(kid, "agent", *names), value))
                                   for kid, _ in ring.keys))

    return answer


def unsigned_allow(intent: Intent) -> list[Record]:
    """What anyone reading the intents topic can make: a perfect ALLOW, with no key."""
    return [Record(decision_for(intent).model_dump_json().encode())]


def allow_signed_by_an_untrusted_ring(intent: Intent) -> list[Record]:
    return [signed_with(ATTACKER_RING)(intent, DecisionKind.ALLOW)]


FORGERS: dict[str, Decide] = {"unsigned": unsigned_allow, "untrusted_key": allow_signed_by_an_untrusted_ring}


def real_block(intent: Intent) -> list[Record]:
    return [signed_with(RING)(intent, DecisionKind.BLOCK, reasons=("refund of 9999 over 500",))]


@pytest.fixture
async def topics(kafka_bootstrap: str, unique_name: str) -> TopicNames:
    names = TopicNames(unique_name)
    await create_topics(kafka_bootstrap, names)
    return names


@pytest.fixture
def settings(kafka_bootstrap: str, topics: TopicNames) -> Settings:
    return Settings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topics.prefix,
                    decision_timeout_s=DEADLINE_S, partitions=PARTITIONS,
                    agent_credential=str(CREDENTIAL))


@pytest.mark.parametrize("forger", FORGERS, ids=list(FORGERS))
async def test_with_no_worker_a_forger_gets_governance_unavailable_and_no_fail_open(
    kafka_bootstrap: str, settings: Settings, topics: TopicNames, forger: str,
) -> None:
    ran: list[bool] = []
    async with Responder(kafka_bootstrap, topics, FORGERS[forger]) as forging, Gate(settings) as gate:

        @gate.guard(tool="payments.refund", action="create", target="payments:refunds", fail_open=True)
        async def refund() -> None:
            ran.append(True)

        decision = await gate.check(**REFUND)
        with pytest.raises(GovernanceUnavailable, match="answering in the worker's name"):
            await refund()
        transport = gate.transport
        assert isinstance(transport, KafkaTransport)
        assert transport.demux.stats.rejected == 2 and transport.demux.stats.delivered == 0
    assert len(forging.seen) == 2
    assert decision.decision is DecisionKind.BLOCK
    assert decision.reasons[0].startswith(f"{GOVERNANCE_UNAVAILABLE}: no verifiable decision within 1.5 s")
    assert "did not verify" in decision.reasons[0]
    assert ran == []
    records = await read_topic(kafka_bootstrap, topics.outcomes, 2)  # reports: a worker audits them
    audits = [AuditRecord.model_validate_json(value) for _, value in records]
    assert {a.event_type for a in audits} == {AuditEventType.SECURITY}


async def test_with_no_worker_and_no_forger_a_fail_open_tool_runs_audited(
    kafka_bootstrap: str, settings: Settings, topics: TopicNames,
) -> None:
    async with Gate(settings) as gate:
        assert gate.trusted

        @gate.guard(tool="tickets.create", action="create", target="helpdesk:tickets", fail_open=True)
        async def open_ticket() -> str:
            return "T-1"

        assert await open_ticket() == "T-1"
    (key, value), _ = await read_topic(kafka_bootstrap, topics.outcomes, 2)  # reports: a worker audits them
    audit = AuditRecord.model_validate_json(value)
    assert audit.event_type is AuditEventType.FAIL_OPEN and audit.intent is not None
    assert key == audit.intent.agent_id.encode()
    assert audit.decision is not None
    assert audit.decision.reasons[0] == f"{GOVERNANCE_UNAVAILABLE}: no decision within 1.5 s"


async def test_a_worker_holding_the_agents_key_is_believed(
    kafka_bootstrap: str, settings: Settings, topics: TopicNames,
) -> None:
    def worker(intent: Intent) -> list[Record]:
        return [signed_with(RING)(intent, DecisionKind.ALLOW)]

    async with Responder(kafka_bootstrap, topics, worker), Gate(settings) as gate:
        decision = await gate.check(**REFUND)
    assert decision.decision is DecisionKind.ALLOW


@pytest.mark.parametrize("forger", FORGERS, ids=list(FORGERS))
async def test_a_forged_allow_before_the_real_block_is_dropped(
    kafka_bootstrap: str, settings: Settings, topics: TopicNames, forger: str,
) -> None:
    async with Responder(kafka_bootstrap, topics, FORGERS[forger]), \
            Responder(kafka_bootstrap, topics, real_block, delay_s=WORKER_DELAY_S), \
            Gate(settings) as gate:

        @gate.guard(tool="payments.refund", action="create", target="payments:refunds", fail_open=True)
        async def refund() -> None:
            raise AssertionError("must not run")

        decision = await gate.check(**REFUND)
        with pytest.raises(ActionBlocked) as blocked:
            await refund()
        transport = gate.transport
        assert isinstance(transport, KafkaTransport)
        assert transport.demux.stats.rejected == 2 and transport.demux.stats.delivered == 2
    assert decision.decision is DecisionKind.BLOCK and decision.reasons == ("refund of 9999 over 500",)
    assert type(blocked.value) is ActionBlocked
    assert blocked.value.reasons == ("refund of 9999 over 500",)


async def test_a_signed_decision_for_another_action_is_dropped(
    kafka_bootstrap: str, settings: Settings, topics: TopicNames,
) -> None:
    """The worker's own ALLOW of a small refund, replayed for this request id, does not allow 9,999."""
    def worker(intent: Intent) -> list[Record]:
        small = intent.model_copy(update={"params": {"amount": 1}})
        replayed = signed_with(RING)(intent, DecisionKind.ALLOW, intent_digest=small.digest())
        return [replayed, *real_block(intent)]

    async with Responder(kafka_bootstrap, topics, worker), Gate(settings) as gate:
        decision = await gate.check(**REFUND)
        transport = gate.transport
        assert isinstance(transport, KafkaTransport) and transport.demux.stats.rejected == 1
    assert decision.decision is DecisionKind.BLOCK and decision.reasons == ("refund of 9999 over 500",)


async def test_the_intent_record_is_keyed_placed_and_authenticated_as_its_credential(
    kafka_bootstrap: str, settings: Settings, topics: TopicNames,
) -> None:
    def worker(intent: Intent) -> list[Record]:
        return [signed_with(RING)(intent, DecisionKind.ALLOW)]

    async with Responder(kafka_bootstrap, topics, worker) as running, Gate(settings) as gate:
        await gate.check(**REFUND)
    (record,) = running.records
    (intent,) = running.seen
    assert (intent.agent_id, intent.agent_role, intent.environment, intent.agent_owner) == (
        "sup-1", "support", "production", "team-a")
    assert record.key == b"sup-1" and record.partition == partition_for("sup-1", PARTITIONS)
    key_id, mac = split_authenticator(header(record.headers))
    assert key_id == "k1"
    check(RING.derive("k1", "agent", *agent_names("sup-1", "support", "production", "team-a")),
          record.value, mac)


def test_sync_gate_with_a_credential_on_the_real_broker(
    kafka_bootstrap: str, settings: Settings, topics: TopicNames,
) -> None:
    def sync_agent() -> None:
        with SyncGate(settings) as gate:

            @gate.guard(tool="payments.refund", action="create", target="payments:refunds", fail_open=True,
                        params={"amount": 9999})
            def refund() -> None:
                raise AssertionError("must not run")

            with pytest.raises(ActionBlocked, match="over 500"):
                refund()

    async def with_forger_and_worker() -> None:
        async with Responder(kafka_bootstrap, topics, unsigned_allow), \
                Responder(kafka_bootstrap, topics, real_block, delay_s=WORKER_DELAY_S):
            await asyncio.to_thread(sync_agent)

    asyncio.run(with_forger_and_worker())
