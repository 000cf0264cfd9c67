"""Prometheus metrics of a worker, on its own registry (served at ``/metrics`` by the faust web server)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from streams.stages.outputs import Outcome

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)

LagSource = Callable[[], Mapping[tuple[str, int], int]]


def unhandled(highwater: int, handled: int | None) -> int:
    """Records of a partition not handled yet: up to its high watermark, after the last handled offset."""
    return max(0, highwater - (handled + 1 if handled is not None else 0))


class _LagCollector(Collector):
    """Consumer lag per topic partition, computed at scrape time."""

    def __init__(self, source: LagSource) -> None:
        self._source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "sluicegate_consumer_lag", "Records not yet processed per assigned partition.",
            labels=["topic", "partition"],
        )
        for (topic, partition), lag in sorted(self._source().items()):
            family.add_metric([topic, str(partition)], lag)
        yield family


class Metrics:
    """Every metric the worker exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "sluicegate_decisions", "Decisions emitted, by outcome and finality.",
            ["decision", "final"], registry=self.registry,
        )
        self.latency = Histogram(
            "sluicegate_decision_latency_seconds",
            "From the intent's Kafka timestamp to its decision being handed to the producer.",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.duplicates = Counter(
            "sluicegate_duplicate_intents", "Redelivered intents answered from the idempotency record.",
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "sluicegate_dead_letters", "Messages sent to the dead-letter topic.", registry=self.registry,
        )
        self.forwarded = Counter(
            "sluicegate_forwarded", "Intents forwarded to a shared-limit partition.", registry=self.registry,
        )
        self.leased = Counter(
            "sluicegate_leased", "Intents under a shared limit decided on their own partition under a budget "
            "lease (docs/leases.md).", registry=self.registry,
        )
        self.lease_waits = Counter(
            "sluicegate_lease_waits", "Intents that waited for the answer to a lease ask.",
            registry=self.registry,
        )
        self.policy = Info("sluicegate_policy", "The policy in force.", registry=self.registry)
        self.policy_loads = Counter(
            "sluicegate_policy_loads", "Policies read from the policies topic, by result.", ["result"],
            registry=self.registry,
        )
        self.ready = Gauge("sluicegate_ready", "1 when the worker is ready.", registry=self.registry)

    def observe(self, outcome: Outcome, record_ms: int | None) -> None:
        """Count what handling one message produced; ``record_ms`` is its Kafka timestamp."""
        if outcome.duplicate:
            self.duplicates.inc()
        if outcome.forwarded and not outcome.duplicate:
            self.forwarded.inc()
        if outcome.leased:
            self.leased.inc()
        if outcome.waiting:
            self.lease_waits.inc()
        if any(item.route == "dead_letter" for item in outcome.sends):
            self.dead_letters.inc()
        decision = outcome.decision
        if decision is not None and not outcome.duplicate:
            self.decisions.labels(decision.decision.value, str(decision.final).lower()).inc()
            if record_ms:
                self.latency.observe(max(0.0, time.time() - record_ms / 1000))

    def watch_lag(self, source: LagSource) -> None:
        """Export consumer lag computed by ``source`` at scrape time."""
        self.registry.register(_LagCollector(source))
