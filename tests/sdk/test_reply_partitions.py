"""Reply partitions on the real broker with a real trust-on worker (docs/replies.md): each agent process
gets its decisions on the partition it leases and reads none of another's; a reply key changed after
signing is refused and honoured nowhere; a decision signed for another agent on one's partition is not
believed; a moved lease or a restarted worker loses no decision in flight."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas import Decision, DecisionKind
from schemas.decision import UNAUTHENTICATED
from sluicegate import AgentCredential, Gate, Settings
from sluicegate.routing import ReplyCheck, partition_for
from sluicegate.transport import KafkaTransport
from sluicegate.trust import AUTH_HEADER, KeyRing, RequestSigner, SignerCredential
from streams.policy_source import publish_policy
from tests.streams.harness import WorkerProcess, make_intent

pytestmark = pytest.mark.integration

RING = KeyRing.generate("k1")
SIGNER = RequestSigner.generate()
REPLY_PARTITIONS = 4
POLICY = """
policy: replies
default: BLOCK
rules:
  - id: small-refund
    match: {tool: payments.refund}
    when: {field: params.amount, op: lte, value: 100}
    decision: ALLOW
"""
WAIT_S = 90.0
Gates = Callable[[str], Gate]


def credential(agent: str) -> AgentCredential:
    return AgentCredential.issue(RING, agent, "support", "production", "team-a")


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    workdir = tmp_path_factory.mktemp("replies")
    keys = {"SLUICEGATE_TRUST_KEYS": str(RING), "SLUICEGATE_TRUST_SIGNING_KEY": str(SIGNER),
            "SLUICEGATE_REPLY_PARTITIONS": str(REPLY_PARTITIONS)}
    proc = WorkerProcess(kafka_bootstrap, "rp" + secrets.token_hex(5), workdir, partitions=2, trust=keys)
    publisher = SignerCredential.issue(RING, "publisher", "policy-team")
    asyncio.run(publish_policy(kafka_bootstrap, proc.names.policies, POLICY, "replies.yaml", publisher))
    with proc.running():
        yield proc


def settings(worker: WorkerProcess) -> Settings:
    return Settings(kafka_bootstrap_servers=worker.bootstrap, topic_prefix=worker.prefix, reply_leases=True,
                    reply_sharing=1, decision_timeout_s=WAIT_S)


@pytest.fixture
async def gates(worker: WorkerProcess) -> AsyncIterator[Gates]:
    """Started gates, one agent process each, stopped at the end."""
    started: list[Gate] = []

    def make(agent: str) -> Gate:
        gate = Gate(settings(worker), credential=credential(agent))
        started.append(gate)
        return gate

    yield make
    for gate in started:
        await gate.stop()


async def refund(gate: Gate, amount: int) -> Decision:
    """A refund's final decision (ALLOW up to 100)."""
    return await gate.check(tool="payments.refund", action="create", target="payments:refunds",
                            params={"amount": amount})


def transport(gate: Gate) -> KafkaTransport:
    assert isinstance(gate.transport, KafkaTransport)
    return gate.transport


async def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_each_process_gets_its_decisions_on_its_partition_and_reads_no_other(gates: Gates) -> None:
    first, second = gates("rp-agent-1"), gates("rp-agent-2")
    await first.start()
    await second.start()
    a, b = transport(first), transport(second)
    assert a.reply_key is not None and b.reply_key is not None
    assert a.reply_partitions_read != b.reply_partitions_read  # exclusive leases (sharing 1)

    calls = 5
    decisions = await asyncio.gather(*(refund(gate, 10) for gate in (first, second) for _ in range(calls)))

    assert {d.decision for d in decisions} == {DecisionKind.ALLOW}
    for t in (a, b):
        assert t.assigned_partitions == frozenset()  # nothing read on the decisions topic
        assert len(t.reply_partitions_read) == 1
        assert sum(t.demux.stats.records.values()) == calls  # its own decisions, nobody else's
        assert t.demux.stats.skipped == 0 and t.demux.stats.rejected == 0


async def test_a_reply_key_changed_after_signing_is_refused_and_not_honoured(
    worker: WorkerProcess, gates: Gates,
) -> None:
    victim = gates("rp-victim")
    await victim.start()
    target = transport(victim).reply_key
    assert target is not None
    agent = "rp-tamper"
    intent = make_intent(agent, agent_role="support", agent_owner="team-a")
    value = intent.model_dump_json().encode()
    headers = [(AUTH_HEADER, credential(agent).authenticate(value))]
    tampered = intent.model_copy(update={"reply_key": target}).model_dump_json().encode()

    await produce(worker, worker.names.intents, agent.encode(), tampered, headers)

    refused = await find(worker, worker.names.decisions, intent.request_id)
    assert refused.decision is DecisionKind.BLOCK and refused.determining[0] == UNAUTHENTICATED
    replies = await read_all(worker, worker.names.replies)
    assert all(Decision.model_validate_json(value).request_id != intent.request_id for value in replies)
    assert transport(victim).demux.stats.records.total() == 0


async def test_a_decision_for_another_agent_on_ones_partition_is_not_believed(
    worker: WorkerProcess, gates: Gates,
) -> None:
    victim = gates("rp-owner")
    await victim.start()
    t = transport(victim)
    key = t.reply_key
    assert key is not None
    request_id = uuid.uuid4()
    mine = make_intent("rp-owner", request_id=request_id, agent_owner="team-a", reply_key=key,
                       params={"amount": 5000})
    own = credential("rp-owner")
    waiter = await t.expect(request_id, "rp-owner", ReplyCheck(own.key_id, own.key, mine.digest()), key)
    try:
        # another agent, with its own valid credential, names the same request id and this reply key
        other = make_intent("rp-intruder", request_id=request_id, agent_owner="team-a", reply_key=key)
        other_value = other.model_dump_json().encode()
        await produce(worker, worker.names.intents, b"rp-intruder", other_value,
                      [(AUTH_HEADER, credential("rp-intruder").authenticate(other_value))])
        await wait_until(lambda: waiter.rejected_count >= 1, "the intruder's decision on the partition")

        value = mine.model_dump_json().encode()
        await t.send_intent(mine, value, [(AUTH_HEADER, own.authenticate(value))])
        decision = await asyncio.wait_for(waiter.next(), WAIT_S)
    finally:
        t.forget(request_id)
    assert decision.agent_id == "rp-owner" and decision.decision is DecisionKind.BLOCK  # 5000: its own


async def test_a_moved_lease_loses_no_decision_in_flight(
    worker: WorkerProcess, gates: Gates,
) -> None:
    gate = gates("rp-mover")
    await gate.start()
    t = transport(gate)
    old = t.reply_key
    assert old is not None
    old_partition = partition_for(old, REPLY_PARTITIONS)
    own = credential("rp-mover")
    intent = make_intent("rp-mover", agent_owner="team-a", reply_key=old)
    waiter = await t.expect(intent.request_id, "rp-mover", ReplyCheck(own.key_id, own.key, intent.digest()),
                            old)

    await t.move_lease()
    assert t.reply_key not in (None, old)
    assert old_partition in t.reply_partitions_read  # still read: a call waits on it
    value = intent.model_dump_json().encode()
    await t.send_intent(intent, value, [(AUTH_HEADER, own.authenticate(value))])
    decision = await asyncio.wait_for(waiter.next(), WAIT_S)
    assert decision.request_id == intent.request_id and decision.decision is DecisionKind.ALLOW

    t.forget(intent.request_id)
    await wait_until(lambda: old_partition not in t.reply_partitions_read, "the old partition dropped")
    after = await refund(gate, 1)
    assert after.decision is DecisionKind.ALLOW


async def test_without_a_free_partition_a_process_is_answered_on_the_decisions_topic(gates: Gates) -> None:
    holders = [gates(f"rp-holder-{i}") for i in range(REPLY_PARTITIONS)]
    for gate in holders:
        await gate.start()
    late = gates("rp-late")
    await late.start()
    t = transport(late)
    assert t.reply_key is None  # every place taken (sharing 1): the intent names no reply key

    assert (await refund(late, 3)).decision is DecisionKind.ALLOW
    assert t.assigned_partitions and not t.reply_partitions_read

    await holders[0].stop()  # a place frees up; the late process leases it
    await t.move_lease()
    assert t.reply_key is not None
    assert t.assigned_partitions == frozenset()  # nobody waits there any more: no longer read
    assert (await refund(late, 3)).decision is DecisionKind.ALLOW
    assert len(t.reply_partitions_read) == 1


async def test_a_restarted_process_and_a_killed_worker_lose_no_decision(
    worker: WorkerProcess, gates: Gates,
) -> None:
    first = gates("rp-restart")
    await first.start()
    await refund(first, 1)
    await first.stop()  # the process ends: its lease is released

    worker.kill()  # nothing committed after this: the next intents wait on the topic
    again = gates("rp-restart")
    await again.start()
    assert transport(again).reply_key is not None
    pending = asyncio.ensure_future(refund(again, 2))
    worker.start()
    decision = await asyncio.wait_for(pending, WAIT_S + 30)
    assert decision.decision is DecisionKind.ALLOW and decision.final
    assert transport(again).assigned_partitions == frozenset()


async def produce(worker: WorkerProcess, topic: str, key: bytes, value: bytes,
                  headers: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=worker.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def read_all(worker: WorkerProcess, topic: str) -> list[bytes]:
    """Every value on ``topic`` now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=worker.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic)
                                                         or await _partitions(consumer, topic))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        values: list[bytes] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values += [r.value for r in records if r.value is not None]
        return values
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # a fresh consumer knows no topic yet
    return consumer.partitions_for_topic(topic) or set()


async def find(worker: WorkerProcess, topic: str, request_id: uuid.UUID) -> Decision:
    """The decision for ``request_id`` on ``topic``, waiting for it."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for value in await read_all(worker, topic):
            decision = Decision.model_validate_json(value)
            if decision.request_id == request_id:
                return decision
        await asyncio.sleep(0.2)
    raise AssertionError(f"no decision for {request_id} on {topic}")


