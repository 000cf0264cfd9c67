"""Smoke test: messages through the real broker with aiokafka, rows through the real ClickHouse engine."""

from __future__ import annotations

import datetime as dt

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from clickhouse_connect.driver.client import Client

from infra.kafka.admin import TopicSpec, ensure_topics, partition_mismatches


async def test_produce_and_consume_through_the_broker(kafka_bootstrap: str, unique_name: str) -> None:
    topic = f"{unique_name}.smoke"
    created = await ensure_topics(
        kafka_bootstrap, [TopicSpec(topic, partitions=3, configs={"cleanup.policy": "compact"})]
    )
    assert created == [topic]
    assert await ensure_topics(kafka_bootstrap, [TopicSpec(topic, partitions=3)]) == []
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(20)}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in sent.items():
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, group_id=unique_name, auto_offset_reset="earliest"
    )
    await consumer.start()
    received: dict[bytes, bytes] = {}
    try:
        partitions: set[int] = set()
        async for message in consumer:
            assert message.key is not None and message.value is not None
            received[message.key] = message.value
            partitions.add(message.partition)
            if len(received) == len(sent):
                break
    finally:
        await consumer.stop()
    assert received == sent
    assert len(partitions) > 1  # keys were spread over the topic's partitions


def test_rows_round_trip_through_clickhouse(clickhouse_client: Client, unique_name: str) -> None:
    clickhouse_client.command(f"CREATE DATABASE IF NOT EXISTS {unique_name}")
    table = f"{unique_name}.events"
    clickhouse_client.command(
        f"CREATE TABLE {table} (id UInt32, agent String, at DateTime64(3, 'UTC')) "
        "ENGINE = MergeTree ORDER BY id"
    )
    at = dt.datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    rows = [[i, f"agent-{i % 3}", at] for i in range(50)]
    clickhouse_client.insert(table, rows, column_names=["id", "agent", "at"])
    result = clickhouse_client.query(f"SELECT id, agent, at FROM {table} ORDER BY id")
    assert [[r[0], r[1], r[2].astimezone(dt.UTC)] for r in result.result_rows] == rows
    counts = clickhouse_client.query(f"SELECT agent, count() FROM {table} GROUP BY agent ORDER BY agent")
    assert counts.result_rows == [("agent-0", 17), ("agent-1", 17), ("agent-2", 16)]
    clickhouse_client.command(f"DROP DATABASE {unique_name}")


async def test_partition_mismatches_names_each_topic_with_another_count(kafka_bootstrap: str,
                                                                        unique_name: str) -> None:
    await ensure_topics(kafka_bootstrap, [TopicSpec(f"{unique_name}-a", 3), TopicSpec(f"{unique_name}-b", 1)])
    specs = [TopicSpec(f"{unique_name}-a", 3), TopicSpec(f"{unique_name}-b", 2),
             TopicSpec(f"{unique_name}-missing", 4)]
    assert await partition_mismatches(kafka_bootstrap, specs) == [f"{unique_name}-b has 1 partitions, not 2"]
