"""A fix for faust-streaming 0.15 losing records of partitions that have no committed offset yet.

While the flow is paused (recovery after a restart) or after a generation change, faust drops the
records it already fetched and "seeks back to committed offsets". aiokafka's ``seek_to_committed``
only seeks partitions whose committed offset is > 0, so a partition never committed (a worker killed
before its first commit) keeps its advanced position: the dropped intents were never decided. Here
the source partitions without a committed offset are rewound to the beginning instead, which is what
``auto_offset_reset=earliest`` means for them; redelivered intents are answered from their records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

_REWIND_ATTR = "sluicegate_rewind_topics"


async def _seek_to_committed(self: Any) -> Mapping[Any, int]:
    consumer = self._ensure_consumer()
    offsets: Mapping[Any, int] = await self.call_thread(consumer.seek_to_committed)
    topics: frozenset[str] = getattr(self.app, _REWIND_ATTR, frozenset())
    lost = [tp for tp, offset in offsets.items() if not offset and tp.topic in topics]
    if lost:
        await self.call_thread(consumer.seek_to_beginning, *lost)
    return offsets


def rewind_uncommitted(app: Any, topics: set[str]) -> None:
    """Make ``app``'s consumer rewind never-committed partitions of ``topics`` when faust seeks back."""
    setattr(app, _REWIND_ATTR, frozenset(topics))
    AIOKafkaConsumerThread.seek_to_committed = _seek_to_committed  # type: ignore[method-assign]
