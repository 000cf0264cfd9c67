"""How a worker starts: it refuses topics partitioned unlike its state (it does not start) and BLOCKs
intents stamped far from its clock; after an upgrade it resumes where the previous version stopped."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.kafka.admin import TopicSpec, ensure_topics
from schemas import DecisionKind
from streams.policy_source import publish_policy
from streams.topology import WorkerTopics
from tests.streams.harness import POLICIES, Client, WorkerProcess, make_intent

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("which", ["intents", "changelog"])
async def test_a_worker_refuses_a_topic_partitioned_unlike_its_state(kafka_bootstrap: str, tmp_path: Path,
                                                                      which: str) -> None:
    worker = WorkerProcess(kafka_bootstrap, "t" + secrets.token_hex(5), tmp_path, partitions=3)
    topic = worker.names.intents if which == "intents" else f"{worker.prefix}-worker-agent-state-changelog"
    await ensure_topics(kafka_bootstrap, [TopicSpec(topic, 2)])  # e.g. auto-created, or an older deployment
    worker.start()
    assert worker.proc is not None
    code = await asyncio.to_thread(worker.proc.wait, 120)
    log = worker.log_tail()
    assert code != 0, log
    assert f"{topic} has 2 partitions, not 3" in log
    assert "--partitions" in log


async def test_a_worker_blocks_intents_stamped_far_from_its_clock(kafka_bootstrap: str,
                                                                  tmp_path: Path) -> None:
    worker = WorkerProcess(kafka_bootstrap, "t" + secrets.token_hex(5), tmp_path, max_event_skew_s=300)
    text = (POLICIES / "fleet_budget.yaml").read_text()
    await publish_policy(kafka_bootstrap, worker.names.policies, text, "fleet_budget.yaml")
    worker.start()
    try:
        await worker.wait_ready()
        async with Client(kafka_bootstrap, worker.prefix) as client:
            now = datetime.now(UTC)
            ahead = await client.decide(make_intent("skew-a", occurred_at=now + timedelta(hours=1)))
            assert ahead.decision is DecisionKind.BLOCK and ahead.reasons[0].startswith(
                "event_time_skew: occurred_at is 3,600 s after the intent reached Kafka (at most 300 s)")
            current = await client.decide(make_intent("skew-a", occurred_at=now))
            assert current.decision is DecisionKind.ALLOW
    finally:
        worker.stop()


async def test_an_upgraded_worker_resumes_the_intents_where_the_faust_group_left_them(
    kafka_bootstrap: str, tmp_path: Path,
) -> None:
    """Stage 1 read the intents in faust's group before it had a group of its own: a worker of this
    version starts from that group's offsets, so it does not decide the history again."""
    worker = WorkerProcess(kafka_bootstrap, "t" + secrets.token_hex(5), tmp_path)
    text = (POLICIES / "fleet_budget.yaml").read_text()
    await publish_policy(kafka_bootstrap, worker.names.policies, text, "fleet_budget.yaml")
    await ensure_topics(kafka_bootstrap, WorkerTopics(worker.names, worker.partitions).specs())
    async with Client(kafka_bootstrap, worker.prefix) as client:
        decided_before = [make_intent("upgraded", occurred_at=datetime(2030, 3, 1, 9, i, tzinfo=UTC))
                          for i in range(3)]
        for intent in decided_before:
            await client.send(intent)
        await _commit_at_end(kafka_bootstrap, f"{worker.prefix}-worker", worker.names.intents,
                             worker.partitions)
        worker.start()
        try:
            await worker.wait_ready()
            after = await client.decide(make_intent("upgraded", occurred_at=datetime(2030, 3, 1, 10,
                                                                                       tzinfo=UTC)))
            assert after.decision is DecisionKind.ALLOW
            # Same agent, same partition, handled in order: had they been read, they would be decided.
            assert not [i for i in decided_before if i.request_id in client.decisions]
        finally:
            worker.stop()


async def _commit_at_end(bootstrap: str, group: str, topic: str, partitions: int) -> None:
    """Commit ``group``'s offsets at the end of every partition of ``topic`` (as the old faust worker
    did once it had decided everything)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        assert sum(ends.values()) == 3
        await consumer.commit(ends)
    finally:
        await consumer.stop()
