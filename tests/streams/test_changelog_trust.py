"""With trust on, a worker that rebuilds its state from the changelog trusts only what workers wrote:
records planted on the changelog topic by another producer do not empty a window."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas import DecisionKind
from sluicegate.trust import AUTH_HEADER, KeyRing, RequestSigner, SignerCredential
from streams.policy_source import publish_policy
from streams.topology import WorkerTopics
from tests.streams.harness import POLICIES, Client, WorkerProcess, make_intent

pytestmark = pytest.mark.integration
PARTITIONS = 2


async def _changelog_keys(bootstrap: str, topic: str) -> list[tuple[int, bytes]]:
    """(partition, key) of every record on the changelog, read to its end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: list[tuple[int, bytes]] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                found += [(tp.partition, record.key) for record in records]
        return found
    finally:
        await consumer.stop()


async def test_planted_deletes_on_the_changelog_do_not_reset_a_limit(
    kafka_bootstrap: str, tmp_path: Path,
) -> None:
    ring, signer = KeyRing.generate(), RequestSigner.generate()
    keys = {"SLUICEGATE_TRUST_KEYS": str(ring), "SLUICEGATE_TRUST_SIGNING_KEY": str(signer)}
    prefix = "cl" + secrets.token_hex(5)
    first = WorkerProcess(kafka_bootstrap, prefix, tmp_path / "first", partitions=PARTITIONS, trust=keys)
    names = first.names
    publisher = SignerCredential.issue(ring, "publisher", "policy-team")
    await publish_policy(kafka_bootstrap, names.policies, (POLICIES / "fleet_budget.yaml").read_text(),
                         "fleet_budget.yaml", publisher)
    agent, t0 = f"agent-{uuid.uuid4().hex[:8]}", datetime(2031, 3, 1, 12, tzinfo=UTC)
    first.start()
    try:
        await first.wait_ready()
        async with Client(kafka_bootstrap, prefix, ring=ring) as client:
            refunds = [make_intent(agent, params={"amount": 1}, occurred_at=t0 + timedelta(seconds=i))
                       for i in range(20)]
            allowed = await client.decide_all(refunds)
            assert [d.decision for d in allowed] == [DecisionKind.ALLOW] * 20
    finally:
        first.kill()

    # Someone with produce rights deletes every key of the agents' state: unsealed, and sealed with a
    # key the workers do not hold.
    changelog = WorkerTopics(names, PARTITIONS).agent_state_changelog
    stranger = KeyRing.generate()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for partition, key in await _changelog_keys(kafka_bootstrap, changelog):
            await producer.send(changelog, None, key=key, partition=partition)
            forged = [(AUTH_HEADER, f"{stranger.current}.AAAA".encode())]
            await producer.send(changelog, None, key=key, partition=partition, headers=forged)
        await producer.flush()
    finally:
        await producer.stop()

    second = WorkerProcess(kafka_bootstrap, prefix, tmp_path / "second", partitions=PARTITIONS, trust=keys)
    second.start()  # a new machine: no local state, the whole changelog is read
    try:
        await second.wait_ready()
        async with Client(kafka_bootstrap, prefix, ring=ring) as client:
            later = t0 + timedelta(minutes=1)
            over = await client.decide(make_intent(agent, params={"amount": 1}, occurred_at=later))
        assert (over.decision, over.rules[-1]) == (DecisionKind.BLOCK, "refunds-per-agent-per-10m")
        assert "not written by a worker" in second.log_tail(400)
    finally:
        second.stop()
