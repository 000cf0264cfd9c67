"""The deciding stages on the worker's own event loop: records read with aiokafka, handled by a stage
(:mod:`streams.handlers`) over a :class:`streams.state.changelog_store.ChangelogStore`, outputs produced with
aiokafka. Stage 1 reads the intents and the agent-feedback topic, stage 2 the shared-limits topic; each
runs as one :class:`StageRunner`.

Why not faust agents. Every intent is on this path, and faust's per-message layers (a consumer thread
handing records over, a task pair per record in its drain loop, events, stream queues, acks, a buffered
changelog send with a callback and a RocksDB offset write per table write) cost about 600 µs of CPU
per message, several times the decision itself. Measured with ``bench/e2e.py`` on the 2-core machine:
see the README's speed table. Approvals, timers and web pages stay on faust, where traffic is human.

The same guarantees as the faust agents they replace:

- One consumer group per stage, with the range assignor, so partition N of every topic a stage reads
  goes to the same worker, with partition N of the stage's table.
- One coroutine handles the records, in partition order; a rebalance waits for the batch in hand.
- At least once: offsets are committed only after the producer flushed everything the handled records
  produced (changelog records first, then decisions and audit records). A redelivered record is
  answered from its idempotency record.
- A partition taken over is restored from its changelog before its first record is handled; one given
  up is flushed and checkpointed (:mod:`streams.state.changelog_store`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    MessageSizeTooLargeError,
    RebalanceInProgressError,
)
from aiokafka.structs import ConsumerRecord, RecordMetadata
from mode import Service

from streams.metrics import unhandled
from streams.policy_source import PolicySource
from streams.stages.outputs import Route, Send, dead_letter, now_ms
from streams.stages.retention import Retention
from streams.state.changelog_store import ChangelogStore
from streams.state.table_state import RECEIPT_PREFIX

log = logging.getLogger(__name__)
COMMIT_INTERVAL_S = 0.5
"""How often handled offsets are committed (after a producer flush); bounds redelivery after a crash."""
FETCH_MAX_WAIT_MS = 100
MAX_RECORDS = 1_000
STOP_TIMEOUT_S = 20.0
SESSION_TIMEOUT_MS = 6_000
"""Notice a dead worker within seconds (the broker's minimum)."""
REBALANCE_TIMEOUT_MS = 60_000
"""How long the group waits for a member to finish its revocation (a batch in hand, a take-over
stopping) before it drops it; aiokafka's default is the session timeout."""
ADOPT_CHUNK = 5_000
"""Idempotency records queued between two yields to the event loop while taking over a partition."""


Handler = Callable[[ConsumerRecord[Any, Any]], list[Send]]
"""A stage's handling of one record: the messages to send (its table writes are in the store)."""


@dataclass(frozen=True, slots=True)
class StageTopics:
    """What a stage reads (co-partitioned with its table's changelog) and where its outputs go."""

    sources: tuple[str, ...]
    changelog: str
    routes: dict[Route, str]


@dataclass
class _Progress:
    """Handled offsets not yet committed, and the last changelog send per partition."""

    handled: dict[TopicPartition, int] = field(default_factory=dict)
    changelog: dict[int, asyncio.Future[RecordMetadata]] = field(default_factory=dict)
    last_commit: float = field(default_factory=time.monotonic)
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
    def __init__(self, runner: StageRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.runner.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.runner.assigned(assigned)


class StageRunner(Service):
    """One stage of one worker, started and stopped with the faust app (a dependency of it).

    Should the loop fail (the producer cannot deliver, the broker refuses a commit), the worker
    crashes: it restarts unclean, so its tables are rebuilt from the changelogs and the intents since
    the last commit are redelivered.
    """

    def __init__(
        self, name: str, bootstrap: str, group: str, topics: StageTopics, handle: Handler,
        store: ChangelogStore, retention: Retention, policies: PolicySource,
        legacy_group: str | None = None,
    ) -> None:
        super().__init__()
        self.name, self.bootstrap, self.group, self.topics = name, bootstrap, group, topics
        self.handle, self.store, self.policies = handle, store, policies
        self.retention = retention
        """The stage's queue of idempotency records to evict, told of partitions taken over and given up."""
        self.legacy_group = legacy_group
        """The faust group that read these topics before this runner did: where a partition without a
        committed offset in ``group`` resumes (an upgrade does not decide history again)."""
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
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.restorer: AIOKafkaConsumer | None = None
        self.loop_task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    async def on_start(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0,
                                         max_batch_size=64 * 1024)
        self.restorer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                         enable_auto_commit=False, auto_offset_reset="none")
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=1_000,
            rebalance_timeout_ms=REBALANCE_TIMEOUT_MS)
        await self.producer.start()
        await self.restorer.start()
        await self.consumer.start()
        self.loop_task = asyncio.create_task(self._run(), name=self.name)

    async def on_stop(self) -> None:
        """Finish the batch in hand, flush, commit, checkpoint and close (a clean stop).

        The loop is cancelled only once it released the lock, i.e. between two batches: a record is
        never left with its table writes applied and not sent. Should that or the final commit take
        longer than :data:`STOP_TIMEOUT_S` (the broker is gone), the tables are discarded instead, so
        the next start rebuilds them from the changelogs.
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
            clean = False
            if locked and self.consumer is not None:
                try:
                    await asyncio.wait_for(self._commit(self.consumer.assignment()), STOP_TIMEOUT_S)
                    clean = True
                except Exception:
                    log.exception("%s: could not flush and commit on stop", self.name)
            if not clean:
                log.warning("%s: discarding its tables: the next start rebuilds them", self.name)
                for partition in list(self.store.dbs):
                    self.store.discard(partition)
        finally:
            if locked:
                self.lock.release()
        for client in (self.consumer, self.restorer, self.producer):
            if client is not None:
                await client.stop()
        self.store.close_all()

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
                await self._commit(revoked)
        except Exception as exc:
            await self.crash(exc)

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        self.revoking = False
        if self.consumer is not None and assigned:
            self.consumer.pause(*assigned)
        self.to_take_over = set(assigned)

    async def _take_over(self) -> None:
        """Restore the tables of the partitions just assigned, position them, then resume them.

        A partition given up has its database discarded (a later take-over rebuilds it from the
        changelog: the tombstones written meanwhile may be compacted away by then). A rebalance that
        begins meanwhile stops the take-over; the next assignment starts a new one.
        """
        assert self.consumer is not None and self.restorer is not None
        async with self.lock:
            assigned, self.to_take_over = (self.to_take_over or set()) & self.consumer.assignment(), None
            mine = sorted({tp.partition for tp in assigned})
            kept = set(self.store.dbs)
            for partition in kept - set(mine):
                self.store.discard(partition)
                self.retention.forget(partition)
            for tp in set(self.progress.handled) - assigned:
                del self.progress.handled[tp]
            started = time.monotonic()
            applied = await self.store.restore(self.restorer, mine, lambda: self.revoking)
            for partition in sorted(set(mine) - kept):
                if self.revoking or not await self._adopt(partition):
                    return
            if self.revoking:
                return
            await self._position(assigned)
            self.owned = set(assigned)
            self.consumer.resume(*assigned)
            self.restored.set()
            log.info("%s owns partitions %s (restored %d changelog records in %.1f s)",
                     self.name, mine, applied, time.monotonic() - started)

    async def _adopt(self, partition: int) -> bool:
        """Queue the idempotency records of a partition taken over for eviction, yielding to the loop
        as it goes; False when a rebalance began meanwhile."""
        self.store.use(partition)
        keys = self.store.keys_with_prefix(RECEIPT_PREFIX)
        at_ms = now_ms()
        while chunk := list(itertools.islice(keys, ADOPT_CHUNK)):
            self.retention.adopt(partition, chunk, at_ms)
            await asyncio.sleep(0)
            if self.revoking:
                return False
            self.store.use(partition)
        return True

    async def _position(self, tps: set[TopicPartition]) -> None:
        """Seek each partition to its committed offset, else the legacy group's, else the beginning
        (records fetched before the take-over were not handled)."""
        assert self.consumer is not None
        offsets = {tp: await self.consumer.committed(tp) for tp in tps}
        missing = [tp for tp, offset in offsets.items() if offset is None]
        if missing and self.legacy_group:
            offsets |= await self._legacy_offsets(missing)
        for tp, offset in offsets.items():
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)

    async def _legacy_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        assert self.legacy_group is not None
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            await admin.start()
            found = await admin.list_consumer_group_offsets(self.legacy_group, partitions=tps)
        finally:
            await admin.close()
        result: dict[TopicPartition, int | None] = {}
        for tp in tps:
            meta = found.get(tp)
            result[tp] = meta.offset if meta is not None and meta.offset >= 0 else None
        if any(offset is not None for offset in result.values()):
            log.warning("%s: resuming from the offsets of %s (upgrade)", self.name, self.legacy_group)
        return result

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
        self.consumer.subscribe(list(self.topics.sources), listener=_Listener(self))
        while True:
            if self.to_take_over is not None:
                await self._take_over()
            batches = await self.consumer.getmany(timeout_ms=FETCH_MAX_WAIT_MS, max_records=MAX_RECORDS)
            async with self.lock:
                for tp, records in batches.items():
                    if tp in self.owned and records:  # else fetched before a rebalance: fetched again
                        await self._handle_batch(tp, records)
                if time.monotonic() - self.progress.last_commit >= COMMIT_INTERVAL_S:
                    await self._commit(self.owned)

    async def _handle_batch(self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]]) -> None:
        self.store.use(tp.partition)
        for record in records:
            try:
                sends = self.handle(record)
            except Exception as exc:  # never stop deciding: park the record, say why
                log.exception("failed on %s[%d]@%d", record.topic, record.partition, record.offset)
                sends = [dead_letter(record.key, record.value, exc)]
            await self._send_changelog()  # a failure here crashes the worker (tables ahead of changelog)
            try:
                await self._send(sends)
            except MessageSizeTooLargeError as exc:  # larger than the broker takes: park the record instead
                log.exception("could not send the outputs of %s[%d]@%d", record.topic, record.partition,
                              record.offset)
                await self._send([dead_letter(record.key, record.value, exc)])
            self.positions[(tp.topic, tp.partition)] = record.offset
        self.progress.handled[tp] = records[-1].offset

    async def _send_changelog(self) -> None:
        assert self.producer is not None
        for partition, key, value in self.store.take_writes():
            sent = await self.producer.send(self.topics.changelog, value, key=key, partition=partition)
            sent.add_done_callback(self.progress.check)
            self.progress.changelog[partition] = sent

    async def _send(self, sends: list[Send]) -> None:
        assert self.producer is not None
        for item in sends:
            sent = await self.producer.send(self.topics.routes[item.route], item.value, key=item.key,
                                            headers=list(item.headers) or None)
            sent.add_done_callback(self.progress.check)

    async def _commit(self, tps: set[TopicPartition]) -> None:
        """Flush the producer, then commit the handled offsets of ``tps`` and checkpoint their tables.

        Raises when a send failed (the caller crashes the worker: the records since the last commit
        are redelivered, the tables rebuilt). A commit the group refuses (a rebalance began) is only
        logged: those records are redelivered to whoever owns them next, and answered from their
        idempotency records.
        """
        assert self.producer is not None and self.consumer is not None
        self.progress.last_commit = time.monotonic()
        self.progress.raise_failure()
        offsets = {tp: self.progress.handled.pop(tp) + 1 for tp in tps if tp in self.progress.handled}
        changelog = {p: self.progress.changelog.pop(p) for p in {tp.partition for tp in tps}
                     if p in self.progress.changelog}
        if not offsets and not changelog:
            return
        await self.producer.flush()
        self.progress.raise_failure()
        if offsets:
            try:
                await self.consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
                log.warning("offsets not committed (%r): they will be redelivered", exc)
        for partition, sent in changelog.items():
            if partition in self.store.dbs:
                self.store.checkpoint(partition, sent.result().offset)

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
        """Partitions assigned and their table restored."""
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

