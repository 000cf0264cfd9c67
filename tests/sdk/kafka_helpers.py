"""Broker-side helpers for the SDK's integration tests: topics, a tiny in-test responder, a topic reader."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from infra.kafka import BrokerConfig, start_broker, stop_broker
from infra.kafka.admin import TopicSpec, ensure_topics
from infra.kafka.process import port_is_free
from schemas import Decision, Intent, TopicNames
from sluicegate import Settings
from tests.sdk.fakes import Record

PARTITIONS = 4

Decide = Callable[[Intent], Sequence[Decision | Record]]
"""A stand-in worker's (or forger's) answers to an intent: decisions, or records with their headers."""


@contextlib.contextmanager
def dedicated_broker(directory: Path, ports: range) -> Iterator[BrokerConfig]:
    """A broker of the test's own (it stops and starts it), on the first free port of ``ports``, its data
    under ``directory``; the test is skipped when every port is taken."""
    port = next((p for p in ports if port_is_free("127.0.0.1", p)), None)
    if port is None:
        pytest.skip(f"no free port in {ports.start}-{ports.stop - 1} for a dedicated broker")
    defaults = Settings()
    config = BrokerConfig(port=port, data_dir=directory / "kafka",
                          cache_dir=defaults.artifact_cache_dir.resolve(), version=defaults.kafka_version)
    start_broker(config)
    try:
        yield config
    finally:
        stop_broker(config.data_dir)


async def create_topics(bootstrap: str, topics: TopicNames, partitions: int = PARTITIONS) -> None:
    """The topics the SDK uses; intents and decisions with the same partition count."""
    await ensure_topics(bootstrap, [
        TopicSpec(topics.intents, partitions),
        TopicSpec(topics.decisions, partitions),
        TopicSpec(topics.outcomes, 2),
        TopicSpec(topics.audit, 2),
    ])


@dataclass
class Responder:
    """Stands in for the worker (or for someone answering in its name): reads intents, answers on the
    decisions topic keyed by agent id, ``delay_s`` after reading each."""

    bootstrap: str
    topics: TopicNames
    decide: Decide
    delay_s: float = 0.0
    seen: list[Intent] = field(default_factory=list)
    records: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)
    """The intent records read, with their key, partition and headers."""
    _task: asyncio.Task[None] | None = None
    _consumer: AIOKafkaConsumer | None = None
    _producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0)
        await self._producer.start()
        partitions = await self._producer.partitions_for(self.topics.intents)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        await self._consumer.start()
        self._consumer.assign([TopicPartition(self.topics.intents, p) for p in partitions])
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None and self._producer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500)
            except KafkaError:
                await asyncio.sleep(0.1)
                continue
            for records in batches.values():
                for record in records:
                    intent = Intent.model_validate_json(record.value or b"")
                    self.seen.append(intent)
                    self.records.append(record)
                    if self.delay_s:
                        await asyncio.sleep(self.delay_s)
                    for answer in self.decide(intent):
                        if isinstance(answer, Decision):
                            answer = Record(answer.model_dump_json().encode())
                        with contextlib.suppress(KafkaError):
                            await self._producer.send(
                                self.topics.decisions, answer.value, key=intent.agent_id.encode(),
                                headers=list(answer.headers) or None,
                            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for client in (self._consumer, self._producer):
            if client is not None:
                await client.stop()

    async def __aenter__(self) -> Responder:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def read_topic(
    bootstrap: str, topic: str, count: int, timeout_s: float = 20.0
) -> list[tuple[bytes, bytes]]:
    """The first ``count`` records (key, value) of ``topic``, read from the beginning."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[tuple[bytes, bytes]] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(found) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    found.extend((r.key or b"", r.value or b"") for r in records)
    finally:
        await consumer.stop()
    return found


async def send_raw(
    bootstrap: str, topic: str, key: bytes, value: bytes, partition: int | None = None
) -> None:
    """Publish one record (e.g. a garbage or foreign decision)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()
