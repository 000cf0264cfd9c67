"""Idempotency receipts are kept for a retention, then evicted a few at a time while handling events."""

from __future__ import annotations

import collections
from collections.abc import Iterable

from streams.state.table_state import BytesTable

DEFAULT_RETENTION_MS = 6 * 3_600_000
EVICT_PER_EVENT = 8


class Retention:
    """Per-partition FIFO of idempotency records, evicted a few at a time while handling events."""

    def __init__(self, retention_ms: int) -> None:
        self.retention_ms = retention_ms
        self.queues: dict[int, collections.deque[tuple[int, str]]] = collections.defaultdict(
            collections.deque)

    def note(self, partition: int, now_ms: int, key: str) -> None:
        self.queues[partition].append((now_ms, key))

    def adopt(self, partition: int, keys: Iterable[str], now_ms: int) -> None:
        """Queue idempotency records of a partition taken over as if written at ``now_ms``: records
        restored from a changelog, or kept from before a restart, were queued by no one and would never
        be evicted (they are evicted at most one retention late)."""
        self.queues[partition].extend((now_ms, key) for key in keys)

    def forget(self, partition: int) -> None:
        """A partition given up: its records are another worker's to evict."""
        self.queues.pop(partition, None)

    def evict(self, table: BytesTable, partition: int, now_ms: int) -> None:
        queue = self.queues.get(partition)
        for _ in range(EVICT_PER_EVENT):
            if not queue or queue[0][0] > now_ms - self.retention_ms:
                return
            table.pop(queue.popleft()[1], None)
