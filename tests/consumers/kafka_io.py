"""Kafka helpers of the audit tests: topics, publishing records, reading the dead letters."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from schemas import AuditRecord, ExecutionOutcome, TopicNames
from streams.runtime.outcomes import outcome_record


async def create_topics(bootstrap: str, topics: TopicNames, partitions: int = 3) -> None:
    """The audit, outcome and dead-letter topics, with several partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)
                                   for name in (topics.audit, topics.outcomes, topics.dead_letter)])
    finally:
        await admin.close()


async def publish(bootstrap: str, topics: TopicNames, records: Iterable[AuditRecord | ExecutionOutcome],
                  raw: Iterable[tuple[str, bytes]] = ()) -> None:
    """Records on the audit topic (outcomes as a worker audits them), then raw (topic, bytes) messages."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for record in records:
            audited = outcome_record(record) if isinstance(record, ExecutionOutcome) else record
            await producer.send(topics.audit, audited.model_dump_json().encode(),
                                key=str(audited.request_id).encode())
        for topic, value in raw:
            await producer.send(topic, value, key=b"raw")
        await producer.flush()
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    """The first ``count`` messages of a topic (waits for them)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        while len(found) < count:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                found.extend(batch)
    finally:
        await consumer.stop()
    return found
