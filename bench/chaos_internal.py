"""The workers' internal records of a chaos run, by kind: how often the shared-limit hops and the budget
leases (docs/leases.md) were taken, so a run's ``limit_violations`` of 0 says which paths it covered."""

from __future__ import annotations

import time
from collections import Counter

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import TopicNames
from sluicegate.settings import KafkaOptions
from streams.messages import kind_of

READ_TIMEOUT_S = 60.0


async def internal_kinds(bootstrap: str, topics: TopicNames, options: KafkaOptions) -> dict[str, int]:
    """Records on the shared-limits and agent-feedback topics, per message kind (forward, feedback,
    leaseask, leasegrant, leasereturn, ...)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                **options)
    await consumer.start()
    kinds: Counter[str] = Counter()
    try:
        names = [f"{topics.prefix}.internal.{name}" for name in ("shared-limits", "agent-feedback")]
        parts = [TopicPartition(name, p) for name in names for p in await _partitions(consumer, name)]
        begin, end = await consumer.beginning_offsets(parts), await consumer.end_offsets(parts)
        left = {tp for tp in parts if end[tp] > begin[tp]}
        consumer.assign(sorted(left))
        for tp in left:
            consumer.seek(tp, begin[tp])
        deadline = time.monotonic() + READ_TIMEOUT_S
        while left and time.monotonic() < deadline:
            for tp, batch in (await consumer.getmany(timeout_ms=500, max_records=5000)).items():
                kinds.update(kind_of(r.value or b"") or "other" for r in batch if r.offset < end[tp])
                if batch and batch[-1].offset >= end[tp] - 1:
                    left.discard(tp)
    finally:
        await consumer.stop()
    return dict(sorted(kinds.items()))


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    """The partitions of ``topic`` (none when the cluster does not have it)."""
    if topic not in await consumer.topics():  # a metadata request for every topic
        return []
    return sorted(consumer.partitions_for_topic(topic) or ())
