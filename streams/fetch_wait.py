"""Bound how long the worker's consumer waits on a fetch that excludes its busy partitions.

aiokafka keeps one fetch in flight per broker, and a partition whose records are still buffered (not yet
handed to the agents) is left out of the next fetch. faust-streaming 0.15 hard-codes a fetch wait of
1,500 ms, so when that next fetch only covers idle partitions (approvals, internal topics) the broker
holds it for the full 1.5 s, and the intents drained meanwhile cannot be fetched again until it returns.
Under load this shows as decisions taking 1.5 s and more (measured with ``bench/e2e.py``: fetches of
idle partitions lasting up to 1.58 s, intents behind them). A short wait bounds that stall; an idle
worker pays for it with a few more empty fetches per second.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

FETCH_MAX_WAIT_MS = 100
_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer


def _with_short_fetch_wait(self: Any, transport: Any) -> Any:
    consumer = _create_worker_consumer(self, transport)
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts its fetcher
    return consumer


def shorten_fetch_wait() -> None:
    """Make every faust worker consumer created from now on wait at most ``FETCH_MAX_WAIT_MS``."""
    AIOKafkaConsumerThread._create_worker_consumer = _with_short_fetch_wait  # type: ignore[method-assign]
