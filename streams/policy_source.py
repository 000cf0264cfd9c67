"""Policy hot reload: every worker reads the whole compacted policies topic (no consumer group).

The latest valid policy under :data:`schemas.ACTIVE_POLICY_KEY` is in force; an invalid one is logged
and ignored (the last good one stays). The switch is one reference assignment, read once per intent by
the decide stage, so it is atomic between two intents. Recently used versions are kept so a second
stage decides with the same version as the first, even across a switch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.kafka.admin import TopicSpec, ensure_topics
from schemas.topics import ACTIVE_POLICY_KEY
from streams.engine import CompiledPolicy, PolicyError, compile_policy
from streams.runtime.kafka import reader

if TYPE_CHECKING:
    from streams.metrics import Metrics

log = logging.getLogger(__name__)
KEEP_VERSIONS = 8


class PolicySource:
    """The policy in force, fed from the policies topic."""

    def __init__(self, bootstrap: str, topic: str, metrics: Metrics) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.metrics = metrics
        self.current: CompiledPolicy | None = None
        self.caught_up = asyncio.Event()
        self._versions: OrderedDict[str, CompiledPolicy] = OrderedDict()

    def version(self, version: str) -> CompiledPolicy | None:
        """A recently active policy by its version."""
        return self._versions.get(version)

    def offer(self, text: bytes, offset: int) -> bool:
        """Compile one published policy; install it when valid. True when installed."""
        source = f"{self.topic}@{offset}"
        try:
            policy = compile_policy(text.decode("utf-8"), source)
        except (PolicyError, UnicodeDecodeError) as exc:
            log.error("ignored invalid policy %s (keeping %s):\n%s", source,
                      self.current.version if self.current else "none", exc)
            self.metrics.policy_loads.labels("invalid").inc()
            return False
        self.current = policy
        self._versions[policy.version] = policy
        self._versions.move_to_end(policy.version)
        while len(self._versions) > KEEP_VERSIONS:
            self._versions.popitem(last=False)
        self.metrics.policy_loads.labels("loaded").inc()
        self.metrics.policy.info({"version": policy.version, "name": policy.name, "source": source})
        log.info("policy %s (%s) in force from %s", policy.name, policy.version, source)
        return True

    async def run(self) -> None:
        """Read the topic from the beginning forever; ``caught_up`` is set at the initial end."""
        consumer = reader(self.bootstrap)
        await consumer.start()
        try:
            partitions = [TopicPartition(self.topic, p)
                          for p in sorted(await self._partitions(consumer))]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            pending = {tp for tp, end in ends.items() if end > 0}
            if not pending:
                self.caught_up.set()
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        if record.key == ACTIVE_POLICY_KEY and record.value is not None:
                            self.offer(record.value, record.offset)
                    if tp in pending and await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
                if not pending:
                    self.caught_up.set()
        finally:
            await consumer.stop()

    async def _partitions(self, consumer: AIOKafkaConsumer) -> set[int]:
        for _ in range(100):
            found = consumer.partitions_for_topic(self.topic)
            if found:
                return set(found)
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"policies topic {self.topic} not found")


async def publish_policy(bootstrap: str, topic: str, text: str, source: str = "<policy>") -> CompiledPolicy:
    """Validate ``text`` (raises PolicyError) and publish it as the active policy; returns it."""
    policy = compile_policy(text, source)
    await ensure_topics(bootstrap, [TopicSpec(topic, 1, configs={"cleanup.policy": "compact"})])
    await publish_raw(bootstrap, topic, text)
    return policy


async def publish_raw(bootstrap: str, topic: str, text: str) -> None:
    """Publish ``text`` as the active policy without validating it (tests of the workers' guard)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, text.encode("utf-8"), key=ACTIVE_POLICY_KEY)
    finally:
        await producer.stop()
