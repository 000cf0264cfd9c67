"""Small Kafka helpers for approval tests: create topics, produce JSON models (signed as the workers sign
them, or with the headers given), read a topic to its end."""

from __future__ import annotations

import asyncio
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import BaseModel

from schemas import TopicNames
from tests.approvals.factories import Headers, WorkerKeys

Record: TypeAlias = ConsumerRecord[bytes, bytes]


async def create_topics(bootstrap: str, topics: TopicNames, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [topics.approval_requests, topics.approvals, topics.decisions, topics.dead_letter]
        compacted = {"cleanup.policy": "compact"}
        results = NewTopic(topics.approval_results, partitions, 1, topic_configs=compacted)
        await admin.create_topics([*(NewTopic(n, partitions, 1) for n in names), results])
    finally:
        await admin.close()


async def produce(
    bootstrap: str, topic: str, key: str, model: BaseModel, headers: Headers | None = None
) -> None:
    """``model`` as JSON under ``key``, unsigned unless ``headers`` are given."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=key.encode(), value=model.model_dump_json().encode(),
                                     headers=headers)
    finally:
        await producer.stop()


async def produce_signed(bootstrap: str, topic: str, key: str, model: BaseModel, keys: WorkerKeys) -> None:
    """``model`` as a worker publishes an approval request or final: signed with its request key."""
    await produce(bootstrap, topic, key, model, keys.sign(model.model_dump_json().encode()))


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    cluster = await consumer._client.fetch_all_metadata()
    partitions = cluster.partitions_for_topic(topic)
    assert partitions, f"topic {topic} does not exist"
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def read_all(bootstrap: str, topic: str) -> list[bytes]:
    """Every value currently in ``topic`` (read from the beginning up to the end offsets)."""
    return [r.value for r in await read_records(bootstrap, topic) if r.value is not None]


async def read_records(bootstrap: str, topic: str) -> list[Record]:
    """Every record currently in ``topic`` (read from the beginning up to the end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Record] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(*partitions, timeout_ms=500)
            records.extend(r for tp, rs in batch.items() for r in rs if r.offset < ends[tp])
        return records
    finally:
        await consumer.stop()


async def collect(bootstrap: str, topic: str, count: int, timeout: float = 20) -> list[bytes]:
    """The first ``count`` values of ``topic``, waiting for them to be produced."""
    return [r.value for r in await collect_records(bootstrap, topic, count, timeout) if r.value is not None]


async def collect_records(bootstrap: str, topic: str, count: int, timeout: float = 20) -> list[Record]:
    """The first ``count`` records of ``topic``, waiting for them to be produced."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Record] = []

        async def fill() -> None:
            while len(records) < count:
                batch = await consumer.getmany(timeout_ms=1000)
                records.extend(r for rs in batch.values() for r in rs)

        await asyncio.wait_for(fill(), timeout)
        return records
    finally:
        await consumer.stop()
