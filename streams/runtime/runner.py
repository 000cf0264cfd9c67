"""The worker's one record path: every stage's records read with one aiokafka consumer, handled on the
worker's event loop over the stages' changelog-backed tables, outputs produced with one producer.

Why not faust's consumer and agents. Every intent is on this path, and faust's per-message layers (a
consumer thread handing records over, a task pair per record in its drain loop, events, stream queues,
acks, a buffered changelog send with a callback and a RocksDB offset write per table write) cost about
600 µs of CPU per message, several times the decision itself; on this path a decision costs 124-134 µs
of worker CPU in full batches (``bench/e2e.py``, the README's speed table). faust-streaming hosts the
worker (:mod:`streams.app`): its service tree and lifecycle, web pages and the worker command.

Guarantees:

- One consumer group (``<prefix>-worker``) for every topic the stages read, with the range assignor: all
  those topics have the same partition count, so partition N of each goes to the same worker, together
  with partition N of every stage's table.
- One coroutine handles the records, in partition order, under one lock; a rebalance, the tick and a
  stop wait for the batch in hand.
- At least once, one commit order that survives a crash at any instruction: a record's table writes
  are sent to the changelog before its outputs; then the producer is flushed, the input offsets are
  committed, and only then the tables' held writes and their changelog offset are written to RocksDB
  (:mod:`streams.state.changelog_store`). A failed send stops all commits and crashes the worker; the
  restart restores the tables from their checkpoints and the changelogs, and the records since the last
  commit are redelivered and answered from their idempotency receipts.
- A partition taken over is restored from its changelogs before its first record is handled.
- Fenced after a stall: a worker whose group membership was last confirmed more than
  :data:`FENCE_AFTER_S` ago (a pause, SIGSTOP, a frozen VM: past the session timeout its partitions move
  to another worker) asks the group coordinator before it sends anything (a commit of offsets already
  committed, which the coordinator refuses from a member of an older generation). Refused, the worker
  sends nothing more: it drops what it handled since its last commit and closes its tables at their
  checkpoints, and the rejoin that follows restores whatever it is given. Only what was already handed
  to the producer when the stall began is sent late (see docs/faults.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    IllegalStateError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from aiokafka.partitioner import murmur2
from aiokafka.structs import ConsumerRecord, RecordMetadata
from mode import Service

from sluicegate.settings import PLAINTEXT, KafkaOptions
from streams.metrics import unhandled
from streams.policy_source import PolicySource
from streams.runtime import kafka
from streams.runtime.outbox import Outbox, Sent
from streams.runtime.trust import WorkerTrust
from streams.stages.outputs import Route, Send, dead_letter, now_ms
from streams.state.changelog_store import ChangelogStore

log = logging.getLogger(__name__)
COMMIT_INTERVAL_S = 0.5
"""How often handled offsets are committed (after a producer flush); bounds redelivery after a crash."""
TICK_INTERVAL_S = 1.0
"""How often the stages' :meth:`Stage.tick` runs (approval deadlines)."""
STOP_TIMEOUT_S = 20.0
FENCE_AFTER_S = 1.5
"""Membership confirmed longer ago than this (well under the session timeout, while a working worker
commits every :data:`COMMIT_INTERVAL_S`) is confirmed with the group coordinator before the next send."""


class Stage(Protocol):
    """A stage as the runner drives it. Its table is ``store``, on the partition in use."""

    name: str
    """What logs call it: decide, shared, approval."""
    sources: tuple[str, ...]
    store: ChangelogStore

    def handle(self, record: ConsumerRecord[Any, Any]) -> list[Send]:
        """One record read from ``sources``: the messages to send (table writes are in the store)."""

    async def took_over(self, partition: int, abort: Callable[[], bool]) -> list[Send] | None:
        """A partition just restored: prepare it; None when ``abort()`` became true meanwhile."""

    def gave_up(self, partition: int) -> None:
        """A partition another worker owns now."""

    def tick(self, partition: int, now_ms: int) -> list[Send]:
        """Work due by the clock on a partition whose records are handled up to the broker's end."""

    def flushed(self, partition: int) -> None:
        """Everything sent for the partition so far was delivered."""


@dataclass
class _Progress:
    """Handled offsets not yet committed, and the last changelog send per table partition."""

    handled: dict[TopicPartition, int] = field(default_factory=dict)
    changelog: dict[tuple[str, int], Sent] = field(default_factory=dict)
    last_commit: float = field(default_factory=time.monotonic)
    last_tick: float = field(default_factory=time.monotonic)
    failed: BaseException | None = None
    """The first send the producer gave up on: nothing is committed after it."""

    def check(self, sent: asyncio.Future[RecordMetadata]) -> None:
        """A send's done-callback: remember a failure."""
        if self.failed is None and not sent.cancelled() and sent.exception() is not None:
            self.failed = sent.exception()

    def raise_failure(self) -> None:
        """Refuse to go on (commit) once a send failed."""
        if self.failed is not None:
            raise RuntimeError(f"the producer gave up on a send: {self.failed!r}")


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.runner.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.runner.assigned(assigned)


class Runner(Service):
    """Every stage of one worker, started and stopped with the faust app (a dependency of it).

    Should the loop fail (the producer cannot deliver, the broker refuses a commit), the worker crashes;
    the restart resumes from the tables' checkpoints and the last committed offsets.
    """

    def __init__(
        self, bootstrap: str, group: str, stages: tuple[Stage, ...], routes: dict[Route, str],
        policies: PolicySource, trust: WorkerTrust, options: KafkaOptions = PLAINTEXT,
    ) -> None:
        super().__init__()
        self.bootstrap, self.group, self.stages, self.routes = bootstrap, group, stages, routes
        self.options = options
        self.policies, self.trust = policies, trust
        self.by_topic = {topic: stage for stage in stages for topic in stage.sources}
        self.changelogs = {stage.store.topic for stage in stages}
        self.lock = asyncio.Lock()
        self.progress = _Progress()
        self.positions: dict[tuple[str, int], int] = {}
        self.to_take_over: set[TopicPartition] | None = None
        """Assigned by the last rebalance, paused until :meth:`_take_over` restored them."""
        self.owned: set[TopicPartition] = set()
        """Restored and positioned: the partitions whose records are handled."""
        self.revoking = False
        """A rebalance began: a take-over in progress stops at its next step (the revoke waits for it)."""
        self.restored = asyncio.Event()
        self.prepared: dict[str, set[int]] = {}
        """Per stage: the partitions its :meth:`Stage.took_over` prepared (and not given up since). A
        take-over stopped half-way leaves tables restored but not prepared: the next one prepares them."""
        self.committed: dict[TopicPartition, int] = {}
        """The last offset committed (or positioned at) per owned partition: what a fence check commits."""
        self.confirmed = -1.0
        """When (monotonic) the last request the group coordinator accepted from this member was sent."""
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.outbox: Outbox | None = None
        """What is to be produced, handed to the producer at the end of each batch, tick or take-over
        step, and before every flush."""
        self.restorer: AIOKafkaConsumer | None = None
        self.loop_task: asyncio.Task[None] | None = None

    @property
    def partitions(self) -> set[int]:
        """The partition numbers owned."""
        return {tp.partition for tp in self.owned}

    # -- lifecycle ------------------------------------------------------------------------------------

    async def on_start(self) -> None:
        self.producer = kafka.producer(self.bootstrap, self.options)
        self.restorer = kafka.restore_consumer(self.bootstrap, self.options)
        self.consumer = kafka.group_consumer(self.bootstrap, self.group, self.options)
        await self.producer.start()
        self.outbox = Outbox(self.producer, self._sent)
        await self.restorer.start()
        await self.consumer.start()
        self.loop_task = asyncio.create_task(self._run(), name="runner")

    async def on_stop(self) -> None:
        """Finish the batch in hand, flush, commit, checkpoint and close (a clean stop).

        The loop is cancelled only once it released the lock, i.e. between two batches. Should that or
        the final commit take longer than :data:`STOP_TIMEOUT_S` (the broker is gone), the tables are
        closed at their last checkpoint: the next start restores the rest from the changelogs.
        """
        try:
            await asyncio.wait_for(self.lock.acquire(), STOP_TIMEOUT_S)
            locked = True
        except TimeoutError:
            locked = False
        try:
            if self.loop_task is not None:
                self.loop_task.cancel()
                await asyncio.gather(self.loop_task, return_exceptions=True)
            if locked and self.consumer is not None:
                try:
                    await asyncio.wait_for(self._commit(self.owned), STOP_TIMEOUT_S)
                except Exception:
                    log.exception("could not flush and commit on stop: the next start restores from the "
                                  "last checkpoints")
        finally:
            if locked:
                self.lock.release()
        for client in (self.consumer, self.restorer, self.producer):
            if client is not None:
                await client.stop()
        for stage in self.stages:
            stage.store.close_all()

    # -- rebalance ------------------------------------------------------------------------------------
    # aiokafka calls these while it is not heartbeating, so they stay short: the restore of a partition
    # taken over runs in the loop (:meth:`_take_over`), which keeps the group membership alive. A batch
    # in hand is finished first (the lock). An error here crashes the worker: aiokafka would only log it.

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        self.restored.clear()
        self.revoking = True
        try:
            async with self.lock:
                self.to_take_over = None
                self.owned -= revoked
                for tp in revoked:
                    self.committed.pop(tp, None)
                await self._commit(revoked)
        except Exception as exc:
            await self.crash(exc)

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        self.revoking = False
        if self.consumer is not None and assigned:
            self.consumer.pause(*assigned)
        self.to_take_over = set(assigned)

    async def _take_over(self) -> None:
        """Restore the tables of the partitions just assigned, prepare them, position them, resume.

        A partition given up has its databases discarded (a later take-over rebuilds them from the
        changelogs: the tombstones written meanwhile may be compacted away by then). A rebalance that
        begins meanwhile stops the take-over; the next assignment starts a new one.
        """
        assert self.consumer is not None and self.restorer is not None and self.producer is not None
        async with self.lock:
            assigned, self.to_take_over = (self.to_take_over or set()) & self.consumer.assignment(), None
            mine = sorted({tp.partition for tp in assigned})
            # What this worker handed the producer last (the writes of the revoke's flush) lands before a
            # restore reads the changelogs' ends: a record appended after that read would be missing from
            # the table for good, its checkpoint soon past it.
            await self.producer.flush()
            started, applied = time.monotonic(), 0
            for stage in self.stages:
                prepared = self.prepared.setdefault(stage.name, set())
                for partition in set(stage.store.dbs) - set(mine):
                    stage.store.discard(partition)
                for partition in prepared - set(mine):
                    stage.gave_up(partition)
                    prepared.discard(partition)
                try:
                    applied += await stage.store.restore(self.restorer, mine, lambda: self.revoking)
                except KafkaTimeoutError as exc:  # no leader for a while (a broker starting)
                    self._retake(assigned, exc)
                    return
                for partition in sorted(set(mine) - prepared):
                    if self.revoking:
                        return
                    stage.store.use(partition)
                    sends = await stage.took_over(partition, lambda: self.revoking)
                    if sends is None:
                        return
                    prepared.add(partition)
                    stage.store.use(partition)
                    await self._send_changelog(stage.store)
                    await self._send(sends)
                    await self._send_outbox()
            for tp in set(self.progress.handled) - assigned:
                del self.progress.handled[tp]
            if self.revoking:
                return
            try:
                await self._position(assigned)
            except KafkaTimeoutError as exc:
                self._retake(assigned, exc)
                return
            self.owned = set(assigned)
            self.consumer.resume(*assigned)
            self.restored.set()
            log.info("owns partitions %s (restored %d changelog records in %.1f s)",
                     mine, applied, time.monotonic() - started)

    def _retake(self, assigned: set[TopicPartition], reason: BaseException) -> None:
        """A take-over the broker could not serve in time (no leader yet: a broker starting) is tried
        again by the loop, unless a rebalance gave new partitions meanwhile; it is not a crash."""
        log.warning("take-over of %s stopped (%r): trying again", sorted(assigned), reason)
        if self.to_take_over is None:
            self.to_take_over = assigned

    async def _position(self, tps: set[TopicPartition]) -> None:
        """Seek each partition to its committed offset, else its beginning (records fetched before the
        take-over were not handled)."""
        assert self.consumer is not None
        for tp in tps:
            offset = await self.consumer.committed(tp)
            if offset is None:
                offset = (await self.consumer.beginning_offsets([tp]))[tp]
            self.consumer.seek(tp, offset)
            self.committed[tp] = offset
            self.positions[(tp.topic, tp.partition)] = offset - 1  # handled up to here

    # -- the loop -------------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._consume()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self.crash(exc)

    async def _consume(self) -> None:
        assert self.consumer is not None
        await self.policies.caught_up.wait()
        self.consumer.subscribe(sorted(self.by_topic), listener=_Listener(self))
        while True:
            if self.to_take_over is not None:
                await self._take_over()
            batches = await self.consumer.getmany(timeout_ms=kafka.FETCH_MAX_WAIT_MS,
                                                  max_records=kafka.MAX_RECORDS)
            async with self.lock:
                for tp, records in batches.items():
                    if tp in self.owned and records:  # else fetched before a rebalance: fetched again
                        await self._handle_batch(tp, records)
                clock = time.monotonic()
                if clock - self.progress.last_tick >= TICK_INTERVAL_S:
                    await self._tick()
                if clock - self.progress.last_commit >= COMMIT_INTERVAL_S:
                    await self._commit(self.owned)

    async def _handle_batch(self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]]) -> None:
        stage = self.by_topic[tp.topic]
        stage.store.use(tp.partition)
        for record in records:
            try:
                sends = stage.handle(record)
            except Exception as exc:  # never stop deciding: park the record, say why
                log.exception("%s stage failed on %s[%d]@%d", stage.name, record.topic, record.partition,
                              record.offset)
                sends = [dead_letter(record.key, record.value, exc, _source(record))]
            if not await self._still_owner():
                return
            await self._send_changelog(stage.store)  # a failure here crashes the worker
            try:
                await self._send(sends)
            except MessageSizeTooLargeError as exc:  # larger than the broker takes: park the record instead
                log.exception("could not send the outputs of %s[%d]@%d", record.topic, record.partition,
                              record.offset)
                await self._send([dead_letter(record.key, record.value, exc, _source(record))])
            self.positions[(tp.topic, tp.partition)] = record.offset
        self.progress.handled[tp] = records[-1].offset
        await self._send_outbox()

    async def _tick(self) -> None:
        """Each stage's clock-driven work, on the partitions whose records are handled up to the end the
        broker reported (so nothing recorded before a deadline is overtaken by its expiry)."""
        self.progress.last_tick = time.monotonic()
        at_ms = now_ms()
        for stage in self.stages:
            for partition in sorted(self.partitions):
                if not self._caught_up(stage, partition):
                    continue
                stage.store.use(partition)
                sends = stage.tick(partition, at_ms)
                if not await self._still_owner():
                    return
                await self._send_changelog(stage.store)
                await self._send(sends)
        await self._send_outbox()

    def _caught_up(self, stage: Stage, partition: int) -> bool:
        assert self.consumer is not None
        for topic in stage.sources:
            high = self.consumer.highwater(TopicPartition(topic, partition))
            if high is None or unhandled(high, self.positions.get((topic, partition))) > 0:
                return False
        return True

    async def _send_changelog(self, store: ChangelogStore) -> None:
        assert self.outbox is not None
        for partition, key, value in store.take_writes():
            await self.outbox.add(store.topic, partition, key, value, store.headers(partition, key, value))

    async def _send(self, sends: list[Send]) -> None:
        assert self.producer is not None and self.outbox is not None
        for item in sends:
            topic = self.routes[item.route]
            partition = _partition_of(item.key, await self.producer.partitions_for(topic))
            await self.outbox.add(topic, partition, item.key, item.value, self.trust.seal(item) or None)

    async def _send_outbox(self) -> None:
        assert self.outbox is not None
        await self.outbox.send()

    def _sent(self, topic: str, partition: int, sent: Sent) -> None:
        """A batch handed to the producer: a failure is remembered, a changelog's last batch kept (its
        offset is the checkpoint's once flushed)."""
        sent.future.add_done_callback(self.progress.check)
        if topic in self.changelogs:
            self.progress.changelog[(topic, partition)] = sent

    async def _commit(self, tps: set[TopicPartition]) -> None:
        """Flush the producer, commit the handled offsets of ``tps``, then checkpoint their tables.

        Raises when a send failed (the caller crashes the worker). A commit the group refuses (a
        rebalance began) is only logged: those records are redelivered to whoever owns them next, and
        answered from their idempotency receipts; the checkpoint is still safe (the flush came first).
        """
        assert self.producer is not None and self.consumer is not None
        self.progress.last_commit = time.monotonic()
        await self._send_outbox()
        self.progress.raise_failure()
        partitions = {tp.partition for tp in tps}
        offsets = {tp: self.progress.handled.pop(tp) + 1 for tp in tps if tp in self.progress.handled}
        changelog = {key: self.progress.changelog.pop(key) for key in list(self.progress.changelog)
                     if key[1] in partitions}
        if not offsets and not changelog:
            return
        await self.producer.flush()
        self.progress.raise_failure()
        if offsets:
            asked = time.monotonic()
            try:
                await self.consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
                log.warning("offsets not committed (%r): they will be redelivered", exc)
                if _fenced(exc):
                    self._fence(exc)
                    return
            else:
                self.confirmed = asked
                self.committed.update(offsets)
        for stage in self.stages:
            for partition in sorted(partitions & set(stage.store.dbs)):
                sent = changelog.get((stage.store.topic, partition))
                if sent is not None:
                    stage.store.checkpoint(partition, sent.last_offset())
                stage.store.use(partition)
                stage.flushed(partition)
                await self._send_changelog(stage.store)
        await self._send_outbox()

    # -- the fence -------------------------------------------------------------------------------------

    async def _still_owner(self) -> bool:
        """Whether this worker may send for its partitions. Free while its membership was confirmed
        within :data:`FENCE_AFTER_S`; else a commit of an offset already committed asks the group
        coordinator, and a refusal (another generation, an unknown member) fences the worker."""
        assert self.consumer is not None
        if time.monotonic() - self.confirmed < FENCE_AFTER_S:
            return True
        known = {tp: offset for tp, offset in self.committed.items() if tp in self.owned}
        if not known:
            self._fence(IllegalStateError("no partition owned"))
            return False
        tp = min(known)
        asked = time.monotonic()
        try:
            await self.consumer.commit({tp: known[tp]})
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
            if _fenced(exc):
                self._fence(exc)
                return False
            return True  # a rebalance began: the partitions stay here until this worker's revoke
        self.confirmed = asked
        return True

    def _fence(self, reason: BaseException) -> None:
        """Stop sending for every partition: the group gave them to others. What was handled since the
        last commit is dropped unsent (its records go to the new owners); each table is closed at its
        checkpoint, to be restored if this worker is given the partition again."""
        log.warning("fenced (%r): partitions %s may belong to another worker now; dropping what was "
                    "handled since the last commit, sending nothing more until the group assigns again",
                    reason, sorted(self.partitions))
        self.owned = set()
        self.restored.clear()
        self.committed.clear()
        self.progress.handled.clear()
        self.progress.changelog.clear()
        if self.outbox is not None:
            self.outbox.drop()
        for stage in self.stages:
            stage.store.take_writes()
            for partition in sorted(stage.store.dbs):
                stage.store.close(partition)
            for partition in sorted(self.prepared.pop(stage.name, set())):
                stage.gave_up(partition)

    # -- what the web pages show ----------------------------------------------------------------------

    def lag(self) -> dict[tuple[str, int], int]:
        """Records not yet handled, per assigned partition (known once fetched)."""
        result: dict[tuple[str, int], int] = {}
        if self.consumer is None:
            return result
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            result[(tp.topic, tp.partition)] = unhandled(high, self.positions.get((tp.topic, tp.partition)))
        return result

    def ready(self) -> bool:
        """Partitions assigned and their tables restored."""
        return bool(self.owned) and self.restored.is_set()

    def status(self) -> dict[str, dict[str, Any]]:
        """Per assigned partition: the last handled offset, the high watermark, paused (restoring)."""
        if self.consumer is None:
            return {}
        paused = self.consumer.paused()
        return {f"{tp.topic}[{tp.partition}]": {
            "handled": self.positions.get((tp.topic, tp.partition)),
            "highwater": self.consumer.highwater(tp), "paused": tp in paused,
        } for tp in sorted(self.consumer.assignment())}


def _fenced(exc: BaseException) -> bool:
    """Whether a refused commit means this member's partitions may be another's (not merely a
    rebalance beginning, which waits for this worker's revoke)."""
    if isinstance(exc, IllegalStateError):  # not assigned any more
        return True
    return isinstance(exc.__cause__, (UnknownMemberIdError, IllegalGenerationError))


def _source(record: ConsumerRecord[Any, Any]) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset


@functools.lru_cache(maxsize=1 << 16)
def _murmur2(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


def _partition_of(key: bytes, partitions: set[int]) -> int:
    """The partition aiokafka's default partitioner gives ``key`` among a topic's ``partitions``, with
    the key's murmur2 remembered: outputs are keyed by agent id, chain id or request id, and murmur2 in
    Python costs 3-9 µs per key, twice per intent."""
    return list(partitions)[_murmur2(key) % len(partitions)]
