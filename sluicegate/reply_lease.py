"""Reply partitions, the Kafka half (docs/replies.md): an agent process claims, renews and releases its
lease on a partition of the replies topic through the lease topic.

Claiming reads the (compacted) lease log once, writes a claim on one of the least held partitions, reads
the log up to that claim and keeps the partition if the claim ranks among its first ``sharing`` live ones
(:class:`sluicegate.replies.LeaseBook`); otherwise it withdraws the claim and tries another partition.
Renewing only writes (the rank stays that of the first claim), so holding a lease costs no reads however
large the fleet. A lease not renewed within its TTL (a paused process) is claimed afresh.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from sluicegate.replies import (
    DEFAULT_LEASE_TTL_MS,
    DEFAULT_REPLY_SHARING,
    LeaseBook,
    ReplyLeaseClaim,
    lease_key,
    reply_key_for,
)
from sluicegate.settings import PLAINTEXT, KafkaOptions

log = logging.getLogger(__name__)

MAX_CLAIM_ATTEMPTS = 8
_READ_TIMEOUT_MS = 500


@dataclass(frozen=True, slots=True)
class ReplyLease:
    """A held reply partition: the key that reaches it, and the offset of the first claim."""

    partition: int
    key: str
    since: int


@dataclass(frozen=True, slots=True)
class LeaseOptions:
    """How an agent process leases reply partitions (a deployment setting, the same fleet-wide)."""

    sharing: int = DEFAULT_REPLY_SHARING
    ttl_ms: int = DEFAULT_LEASE_TTL_MS


class ReplyLeaser:
    """One agent process's lease on a reply partition."""

    def __init__(
        self, bootstrap: str, lease_topic: str, partitions: int, producer: AIOKafkaProducer, *,
        options: LeaseOptions = LeaseOptions(), kafka: KafkaOptions = PLAINTEXT,
        holder: str | None = None, rng: random.Random | None = None,
    ) -> None:
        self.holder = holder or uuid.uuid4().hex
        self.partitions = partitions
        self.options = options
        self.book = LeaseBook(partitions, options.sharing)
        self.lease: ReplyLease | None = None
        self._bootstrap, self._kafka, self._producer = bootstrap, kafka, producer
        self._tp = TopicPartition(lease_topic, 0)
        self._consumer: AIOKafkaConsumer | None = None
        self._rng = rng or random.Random()
        self._renewed_at = 0.0

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None,
                                          enable_auto_commit=False, **self._kafka)
        await self._consumer.start()
        self._consumer.assign([self._tp])
        await self._consumer.seek_to_beginning(self._tp)

    async def stop(self) -> None:
        """Release the lease (best effort: unreleased, it expires) and close."""
        if self.lease is not None:
            try:
                await self._write(self.lease.partition, None)
            except KafkaError as exc:
                log.warning("could not release reply partition %d (%r); it expires", self.lease.partition,
                            exc)
            self.lease = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def acquire(self, avoid: frozenset[int] = frozenset()) -> ReplyLease | None:
        """Claim a partition (not one of ``avoid``); None when every place is taken."""
        tried = set(avoid)
        for _ in range(MAX_CLAIM_ATTEMPTS):
            await self._catch_up(None)
            partition = self.book.pick(_now_ms(), self._rng, frozenset(tried))
            if partition is None:
                break
            offset = await self._write(partition, ReplyLeaseClaim(partition=partition, holder=self.holder,
                                                                  ttl_ms=self.options.ttl_ms))
            at_ms = await self._catch_up(offset)
            if self.book.holds(partition, self.holder, at_ms):
                self.lease = ReplyLease(partition, reply_key_for(partition, self.partitions), offset)
                self._renewed_at = time.monotonic()
                log.info("holding reply partition %d (key %s)", partition, self.lease.key)
                return self.lease
            await self._write(partition, None)
            tried.add(partition)
        self.lease = None
        log.warning("no reply partition free (%d partitions, %d processes each): decisions are read on the "
                    "decisions topic; add partitions (docs/replies.md)", self.partitions,
                    self.options.sharing)
        return None

    async def renew(self) -> ReplyLease | None:
        """Keep the lease (written, not read); claim afresh when it lapsed or there is none."""
        lease = self.lease
        lapsed = time.monotonic() - self._renewed_at > self.options.ttl_ms / 1000
        if lease is None or lapsed:
            if lease is not None:
                await self._write(lease.partition, None)
            return await self.acquire()
        await self._write(lease.partition, ReplyLeaseClaim(partition=lease.partition, holder=self.holder,
                                                           ttl_ms=self.options.ttl_ms, since=lease.since))
        self._renewed_at = time.monotonic()
        return lease

    async def move(self) -> ReplyLease | None:
        """Give the lease up and claim another partition (an operator's rebalance, and the tests')."""
        old = self.lease
        if old is not None:
            await self._write(old.partition, None)
        return await self.acquire(frozenset() if old is None else frozenset({old.partition}))

    async def _write(self, partition: int, claim: ReplyLeaseClaim | None) -> int:
        value = None if claim is None else claim.model_dump_json().encode()
        key = lease_key(partition, self.holder)
        sent = await self._producer.send_and_wait(self._tp.topic, value, key=key, partition=0)
        offset: int = sent.offset
        return offset

    async def _catch_up(self, offset: int | None) -> int:
        """Read the lease log up to its end (or up to ``offset``); the timestamp (the broker's clock) of the
        last record up to there that was read now, or the local clock when none was."""
        consumer = self._consumer
        assert consumer is not None
        target = offset + 1 if offset is not None else (await consumer.end_offsets([self._tp]))[self._tp]
        at_ms = _now_ms()
        while await consumer.position(self._tp) < target:
            batches = await consumer.getmany(self._tp, timeout_ms=_READ_TIMEOUT_MS)
            for record in batches.get(self._tp, []):
                self.book.apply(record.offset, record.timestamp, record.key, record.value)
                if record.offset < target:
                    at_ms = record.timestamp
        return at_ms


def _now_ms() -> int:
    return time.time_ns() // 1_000_000

