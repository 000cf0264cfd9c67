"""The workers' internal records of a chaos run, by kind: how often the shared-limit hops and the budget
leases (docs/leases.md) were taken, so a run's ``limit_violations`` of 0 says which paths it covered."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from aiokafka import AIOKafkaConsumer

from schemas import TopicNames
from sluicegate.settings import KafkaOptions
from streams.messages import kind_of

READ_TIMEOUT_S = 60.0


async def internal_kinds(bootstrap: str, topics: TopicNames, options: KafkaOptions) -> dict[str, int]:
    """Records on the shared-limits and agent-feedback topics, per message kind (forward, feedback,
    leaseask, leasegrant, leasereturn, ...)."""
    names = [f"{topics.prefix}.internal.{name}" for name in ("shared-limits", "agent-feedback")]
    consumer = AIOKafkaConsumer(*names, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", **options)
    await consumer.start()
    kinds: Counter[str] = Counter()
    try:
        deadline = time.monotonic() + READ_TIMEOUT_S
        while not consumer.assignment() and time.monotonic() < deadline:  # every partition, once known
            await asyncio.sleep(0.1)
        parts = sorted(consumer.assignment())
        end = await consumer.end_offsets(parts)
        await consumer.seek_to_beginning(*parts)
        while time.monotonic() < deadline and [tp for tp in parts if await consumer.position(tp) < end[tp]]:
            for tp, batch in (await consumer.getmany(timeout_ms=500, max_records=5000)).items():
                kinds.update(kind_of(r.value or b"") or "other" for r in batch if r.offset < end[tp])
    finally:
        await consumer.stop()
    return dict(sorted(kinds.items()))
