"""The three stages as the runner drives them (:class:`streams.runtime.runner.Stage`): which topics each
reads, how a record becomes a call of the stage, and what happens when a partition is taken over.

Thin adapters: parse the internal message, call the stage, count the outcome in the metrics. An
exception is handled by the runner (the record goes to the dead-letter topic with the error).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Callable
from typing import Any

from aiokafka.structs import ConsumerRecord

from sluicegate.trust import TrustError
from streams.messages import (
    Count,
    Feedback,
    Forward,
    LeaseAsk,
    LeaseGrant,
    LeaseReturn,
    Open,
    Release,
    Resolved,
    kind_of,
)
from streams.metrics import Metrics
from streams.policy_source import PolicySource
from streams.runtime.trust import WorkerTrust
from streams.stages.approval import TRUST_OFF, ApprovalStage, Signer
from streams.stages.decide import DecideStage
from streams.stages.outputs import Send, now_ms
from streams.stages.retention import Retention
from streams.stages.shared import SharedStage
from streams.state.changelog_store import ChangelogStore
from streams.state.table_state import RECEIPT_PREFIX

LOG_APPEND_TIME = 1
"""A record's ``timestamp_type`` when the broker stamped it."""
ADOPT_CHUNK = 5_000
"""Idempotency receipts queued between two yields to the event loop while taking over a partition."""


class _Retaining:
    """A stage whose receipts are evicted after the retention, and that has no clock-driven work."""

    store: ChangelogStore
    retention: Retention

    async def took_over(self, partition: int, abort: Callable[[], bool]) -> list[Send] | None:
        """Queue the receipts of a partition taken over for eviction (restored from a changelog or kept
        from before a restart, nobody queued them), yielding to the loop as it goes."""
        keys = self.store.keys_with_prefix(RECEIPT_PREFIX)
        at_ms = now_ms()
        while chunk := list(itertools.islice(keys, ADOPT_CHUNK)):
            self.retention.adopt(partition, chunk, at_ms)
            await asyncio.sleep(0)
            if abort():
                return None
            self.store.use(partition)
        return []

    def gave_up(self, partition: int) -> None:
        self.retention.forget(partition)

    def tick(self, partition: int, now_ms: int) -> list[Send]:
        return []

    def flushed(self, partition: int) -> None:
        pass


class DecideBinding(_Retaining):
    """The decide stage reads intents and, for the intents it forwarded or parked, the agent-feedback
    topic (feedback from the shared stage, resolved approvals)."""

    name = "decide"

    def __init__(self, stage: DecideStage, store: ChangelogStore, intents: str, feedback: str,
                 policies: PolicySource, metrics: Metrics, trust: WorkerTrust) -> None:
        self.stage, self.store, self.intents, self.retention = stage, store, intents, stage.retention
        self.sources: tuple[str, ...] = (intents, feedback)
        self.policies, self.metrics, self.trust = policies, metrics, trust
        stage.partitions = trust.partitions  # every partition may hold leases (docs/leases.md)

    def handle(self, record: ConsumerRecord[Any, Any]) -> list[Send]:
        partition, body = record.partition, record.value
        if record.topic == self.intents:
            outcome = self.stage.handle_intent(body, record.key, self.policies.current, partition, now_ms(),
                                               record.timestamp, functools.partial(self.trust.admit,
                                                                                   record=record),
                                               self.policies.shadow)
            self.metrics.observe(outcome, record.timestamp)
            return outcome.sends
        self.trust.check_internal(record)
        kind = kind_of(body)
        if kind == "resolved":
            return self.stage.handle_resolved(Resolved.model_validate_json(body), partition, now_ms())
        if kind == "leasegrant":
            sends = []
            for outcome in self.stage.handle_grant(LeaseGrant.model_validate_json(body), partition, now_ms()):
                self.metrics.observe(outcome, outcome.record_ms)
                sends += outcome.sends
            return sends
        return self.stage.handle_feedback(Feedback.model_validate_json(body), partition, now_ms())

    def tick(self, partition: int, now_ms: int) -> list[Send]:
        """Return the leases whose span is over (docs/leases.md)."""
        return self.stage.tick(partition, now_ms)

    async def took_over(self, partition: int, abort: Callable[[], bool]) -> list[Send] | None:
        """Adopt the receipts, and send again what intents settled after waiting for a lease sent, if the
        last owner may have died before its producer flushed it."""
        sends = await super().took_over(partition, abort)
        return None if sends is None else sends + self.stage.unsent(partition)

    def gave_up(self, partition: int) -> None:
        super().gave_up(partition)
        self.stage.gave_up(partition)

    def flushed(self, partition: int) -> None:
        self.stage.flushed(partition)

class SharedBinding(_Retaining):
    """The shared stage reads the shared-limits topic: forwarded intents' hops, releases of
    reservations, and approved actions' counts."""

    name = "shared"

    def __init__(self, stage: SharedStage, store: ChangelogStore, topic: str, policies: PolicySource,
                 metrics: Metrics, trust: WorkerTrust) -> None:
        self.stage, self.store, self.retention = stage, store, stage.retention
        self.sources: tuple[str, ...] = (topic,)
        self.policies, self.metrics, self.trust = policies, metrics, trust

    def handle(self, record: ConsumerRecord[Any, Any]) -> list[Send]:
        self.trust.check_internal(record)
        partition, body = record.partition, record.value
        kind = kind_of(body)
        if kind == "release":
            self.stage.handle_release(Release.model_validate_json(body), partition, now_ms())
            return []
        if kind == "count":
            return self.stage.handle_count(Count.model_validate_json(body), partition, now_ms())
        if kind == "leaseask":
            ask = LeaseAsk.model_validate_json(body)
            return self.stage.handle_ask(ask, self.policies.version(ask.policy_version), partition, now_ms())
        if kind == "leasereturn":
            self.stage.handle_return(LeaseReturn.model_validate_json(body), partition, now_ms())
            return []
        forward = Forward.model_validate_json(body)
        policy = self.policies.version(forward.stage1.policy_version)
        outcome = self.stage.handle_forward(forward, policy, partition, now_ms())
        self.metrics.observe(outcome, record.timestamp)
        return outcome.sends

class ApprovalBinding:
    """The approval stage reads the reviewer topic (verdicts) and approval-control (approvals opened by
    the decide stage); its tick expires approvals."""

    name = "approval"

    def __init__(self, stage: ApprovalStage, store: ChangelogStore, approvals: str, control: str,
                 trust: WorkerTrust) -> None:
        self.stage, self.store, self.approvals, self.trust = stage, store, approvals, trust
        self.sources: tuple[str, ...] = (approvals, control)

    def handle(self, record: ConsumerRecord[Any, Any]) -> list[Send]:
        # A verdict is judged at the broker's time of arrival (the topic's LogAppendTime), which its
        # producer cannot set; on a topic created with producers' times, at the worker's clock.
        stamped = record.timestamp_type == LOG_APPEND_TIME and record.timestamp
        at_ms = record.timestamp if stamped else now_ms()
        if record.topic == self.approvals:
            return self.stage.handle_verdict(record.value, record.key, record.partition, at_ms,
                                             self._signer(record))
        self.trust.check_internal(record)
        return self.stage.handle_open(Open.model_validate_json(record.value), record.partition)

    def _signer(self, record: ConsumerRecord[Any, Any]) -> Signer:
        try:
            signer = self.trust.verdict_signer(record)
        except TrustError as exc:
            return str(exc)
        return TRUST_OFF if signer is None else signer

    async def took_over(self, partition: int, abort: Callable[[], bool]) -> list[Send] | None:
        return self.stage.took_over(partition)

    def gave_up(self, partition: int) -> None:
        self.stage.gave_up(partition)

    def tick(self, partition: int, now_ms: int) -> list[Send]:
        return self.stage.expire_due(partition, now_ms)

    def flushed(self, partition: int) -> None:
        self.stage.flushed(partition)
