"""The gate's Kafka I/O: one producer and one reply consumer per gate, however many agents it serves.

The reply consumer uses manual assignment (no consumer group, no rebalances). With reply leases on
(docs/replies.md) it reads the partition of the replies topic this process leases, where the workers put
the decisions of the intents naming its reply key; otherwise (or while no partition is free) it reads the
partitions of the decisions topic that the gate's agents hash to. Either way a partition is positioned at
its end offset *before* the first intent routed to it is published, and a reply partition is read until
the last call that named it is answered (also after the lease moved), so no decision can be missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError

from schemas import Intent, TopicNames
from schemas.common import WireModel
from sluicegate.breaker import Backoff
from sluicegate.errors import InvalidIntent
from sluicegate.reply_lease import LeaseOptions, ReplyLeaser
from sluicegate.routing import ReplyCheck, ReplyDemux, ReplyWaiter, partition_for
from sluicegate.settings import PLAINTEXT, KafkaOptions

log = logging.getLogger(__name__)

DEFAULT_CONNECT_BACKOFF = Backoff(initial_s=0.1, max_s=10.0)
DEFAULT_BACKLOG = 10_000
_READ_TIMEOUT_MS = 1000
_FETCH_MAX_WAIT_MS = 100

RecordHeaders = Sequence[tuple[str, bytes]]
Signer = Callable[[bytes], RecordHeaders]
"""The headers authenticating a record's exact bytes (an agent's report)."""


class TransportError(Exception):
    """The transport could not do what was asked (broker unreachable, send failed)."""


class PublishUncertain(TransportError):
    """Publishing failed in a way that may still have reached the broker (a timeout, a lost leader): the
    intent may yet be decided, so its decision is still awaited."""


class Transport(Protocol):
    """What a gate needs from the messaging layer; the Kafka one below, fakes in unit tests."""

    topics: TopicNames

    @property
    def connected(self) -> bool: ...

    @property
    def last_error(self) -> str: ...

    async def start(self, wait_s: float) -> None: ...

    async def stop(self, flush_timeout_s: float) -> None: ...

    async def ensure_partition(self, agent_id: str) -> None: ...

    @property
    def reply_key(self) -> str | None:
        """The key of the reply partition this process leases (None: decisions come on the decisions
        topic)."""
        ...

    async def expect(
        self, request_id: UUID, agent_id: str, check: ReplyCheck | None = None, reply_key: str | None = None,
    ) -> ReplyWaiter:
        ...

    def forget(self, request_id: UUID) -> None: ...

    async def send_intent(self, intent: Intent, value: bytes, headers: RecordHeaders = ()) -> None:
        """Publish ``value`` (the intent's exact bytes, which ``headers`` may authenticate)."""
        ...

    def emit(self, topic: str, key: str, payload: WireModel, sign: Signer | None = None) -> None: ...


class KafkaTransport:
    """aiokafka producer + manually assigned reply consumer, reconnecting with backoff and jitter."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: TopicNames,
        *,
        client_id: str = "sluicegate-sdk",
        backoff: Backoff = DEFAULT_CONNECT_BACKOFF,
        metadata_timeout_s: float = 5.0,
        backlog: int = DEFAULT_BACKLOG,
        rng: random.Random | None = None,
        options: KafkaOptions = PLAINTEXT,
        replies: LeaseOptions | None = None,
    ) -> None:
        self.topics = topics
        self._options = options
        self.demux = ReplyDemux()
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._backoff = backoff
        self._metadata_timeout_s = metadata_timeout_s
        self._rng = rng or random.Random()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions = 0
        self._reply_options = replies
        self._reply_partitions = 0
        self.leaser: ReplyLeaser | None = None
        self._assigned: set[TopicPartition] = set()
        self._next_offset: dict[TopicPartition, int] = {}
        self._waiting_on: dict[UUID, TopicPartition] = {}
        self._users: Counter[TopicPartition] = Counter()
        self._assign_lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._has_assignment = asyncio.Event()
        self._last_error = f"still connecting to {bootstrap_servers}"
        self._tasks: set[asyncio.Task[None]] = set()
        self._sends: set[asyncio.Task[None]] = set()
        self._backlog: deque[tuple[str, str, bytes, RecordHeaders]] = deque(maxlen=backlog)

    @property
    def connected(self) -> bool:
        """True once producer and reply consumer are up (aiokafka reconnects them by itself after that)."""
        return self._connected.is_set()

    @property
    def last_error(self) -> str:
        return self._last_error

    @property
    def assigned_partitions(self) -> frozenset[int]:
        """The decision partitions this gate reads."""
        return frozenset(tp.partition for tp in self._assigned if tp.topic == self.topics.decisions)

    @property
    def reply_partitions_read(self) -> frozenset[int]:
        """The partitions of the replies topic this gate reads (its lease's, and those calls in flight
        still wait on)."""
        return frozenset(tp.partition for tp in self._assigned if tp.topic == self.topics.replies)

    @property
    def decision_partitions(self) -> int:
        """Partition count of the decisions topic (0 until connected)."""
        return self._partitions

    @property
    def reply_key(self) -> str | None:
        """The key of the reply partition this process leases, for its intents' ``reply_key`` (None:
        leases off, or no partition free: decisions come on the decisions topic)."""
        lease = self.leaser.lease if self.leaser is not None else None
        return None if lease is None else lease.key

    async def start(self, wait_s: float) -> None:
        """Connect in the background; wait up to ``wait_s`` for the first connection, never raise."""
        self._spawn(self._supervise(), "sluicegate-connect")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), wait_s)

    async def stop(self, flush_timeout_s: float) -> None:
        """Flush outcomes and audit records (bounded), fail waiting calls, release the reply lease, close
        the clients."""
        self.demux.fail_all("gate stopped")
        pending = set(self._sends)
        if pending:
            _, late = await asyncio.wait(pending, timeout=flush_timeout_s)
            for task in late:
                task.cancel()
        for topic, key, value, _ in self._backlog:
            log.error("not delivered to %s (key %s): %s", topic, key, value.decode())
        self._backlog.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.leaser is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.leaser.stop(), flush_timeout_s)
            self.leaser = None
        await self._close_clients()

    async def expect(
        self, request_id: UUID, agent_id: str, check: ReplyCheck | None = None, reply_key: str | None = None,
    ) -> ReplyWaiter:
        """Register a waiter (delivered only replies passing ``check``, when given) and make sure its
        reply is read from now on: on the replies topic's partition of ``reply_key`` (the one its intent
        names), else on the agent's partition of the decisions topic."""
        waiter = self.demux.register(request_id, agent_id, check)
        try:
            tp = self._decisions_tp(agent_id) if reply_key is None else self._reply_tp(reply_key)
            self._waiting_on[request_id] = tp
            self._users[tp] += 1
            await self._ensure(tp)
        except BaseException:
            self.forget(request_id)
            raise
        return waiter

    def forget(self, request_id: UUID) -> None:
        self.demux.unregister(request_id)
        tp = self._waiting_on.pop(request_id, None)
        if tp is None:
            return
        self._users[tp] -= 1
        if self._users[tp] <= 0:
            del self._users[tp]
            if tp in self._assigned and not self._wanted(tp, self._lease_tp()):
                self._spawn(self._prune(), "sluicegate-reply-prune")

    async def ensure_partition(self, agent_id: str) -> None:
        """Read where ``agent_id``'s decisions come: the leased reply partition if there is one, else its
        decision partition; positioned at the end if it is new."""
        if not self.connected:
            raise TransportError(f"not connected to Kafka: {self._last_error}")
        await self._ensure(self._lease_tp() or self._decisions_tp(agent_id))

    async def move_lease(self) -> None:
        """Give up the reply partition and lease another (calls in flight keep reading the old one)."""
        if self.leaser is None:
            raise TransportError("reply leases are off")
        await self.leaser.move()
        await self._prune()

    def _decisions_tp(self, agent_id: str) -> TopicPartition:
        if not self._partitions:
            raise TransportError(f"not connected to Kafka: {self._last_error}")
        return TopicPartition(self.topics.decisions, partition_for(agent_id, self._partitions))

    def _reply_tp(self, reply_key: str) -> TopicPartition:
        if not self._reply_partitions:
            raise TransportError(f"topic {self.topics.replies} not known: cannot wait on {reply_key!r}")
        return TopicPartition(self.topics.replies, partition_for(reply_key, self._reply_partitions))

    def _lease_tp(self) -> TopicPartition | None:
        key = self.reply_key
        return None if key is None else self._reply_tp(key)

    async def _ensure(self, tp: TopicPartition) -> None:
        if not self.connected:
            raise TransportError(f"not connected to Kafka: {self._last_error}")
        if tp in self._assigned:
            return
        async with self._assign_lock:
            if tp not in self._assigned:
                await self._add_partition(tp)

    async def _add_partition(self, new: TopicPartition) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            end = (await consumer.end_offsets([new]))[new]
        except KafkaError as exc:
            raise TransportError(f"cannot read the end of {new}: {exc!r}") from exc
        self._next_offset[new] = end
        self._assign({*self._assigned, new})
        self._has_assignment.set()

    def _assign(self, partitions: set[TopicPartition]) -> None:
        """Read exactly ``partitions``: assign() replaces the whole assignment and forgets positions, so
        ours are restored synchronously, before the fetcher runs again (nothing read is lost)."""
        consumer = self._consumer
        assert consumer is not None
        consumer.assign(sorted(partitions))
        for tp in partitions:
            consumer.seek(tp, self._next_offset[tp])
        for tp in self._assigned - partitions:
            self._next_offset.pop(tp, None)
        self._assigned = set(partitions)

    def _wanted(self, tp: TopicPartition, lease: TopicPartition | None) -> bool:
        """Whether ``tp`` must still be read: it is the lease's, a call in flight waits on it, or (no
        lease) it is a decision partition of the gate's agents."""
        return tp == lease or self._users[tp] > 0 or (lease is None and tp.topic == self.topics.decisions)

    async def _prune(self) -> None:
        """Stop reading partitions that neither the lease nor a call in flight needs (with a lease, the
        decisions topic's too)."""
        async with self._assign_lock:
            if self._consumer is None:
                return
            lease = self._lease_tp()
            keep = {tp for tp in self._assigned if self._wanted(tp, lease)}
            if keep != self._assigned:
                self._assign(keep)

    async def _start_leases(self) -> None:
        """Lease a reply partition (leases on and the replies topic there); on any failure decisions
        keep coming on the decisions topic."""
        options, producer = self._reply_options, self._producer
        if options is None or producer is None:
            return
        partitions = await self._partitions_of(self.topics.replies)
        leases = await self._partitions_of(self.topics.reply_leases)
        if not partitions or not leases:
            log.warning("reply leases on but topic %s or %s not found (workers that predate them?): "
                        "decisions come on %s", self.topics.replies, self.topics.reply_leases,
                        self.topics.decisions)
            return
        self._reply_partitions = len(partitions)
        leaser = ReplyLeaser(self._bootstrap, self.topics.reply_leases, len(partitions), producer,
                             options=options, kafka=self._options, rng=self._rng)
        try:
            await leaser.start()
            await leaser.acquire()
        except (KafkaError, OSError) as exc:
            log.warning("cannot lease a reply partition (%r): decisions come on %s", exc,
                        self.topics.decisions)
            with contextlib.suppress(Exception):
                await leaser.stop()
            return
        self.leaser = leaser
        self._spawn(self._renew(leaser), "sluicegate-reply-lease")

    async def _partitions_of(self, topic: str) -> set[int]:
        """The partitions of ``topic`` (empty: it does not exist, or no answer in time)."""
        producer = self._producer
        assert producer is not None
        try:
            return set(await asyncio.wait_for(producer.partitions_for(topic), self._metadata_timeout_s))
        except (TimeoutError, KafkaError):
            return set()

    async def _renew(self, leaser: ReplyLeaser) -> None:
        """Renew every third of the TTL; when the lease moved, stop reading what nobody waits on."""
        while True:
            await asyncio.sleep(leaser.options.ttl_ms / 3000)
            try:
                await leaser.renew()
            except KafkaError as exc:
                log.warning("renewing the reply lease failed (%r); retrying", exc)
            await self._prune()

    async def send_intent(self, intent: Intent, value: bytes, headers: RecordHeaders = ()) -> None:
        """Publish ``value`` (the intent's JSON) with ``headers``, keyed by agent id (so the default
        partitioner puts it where the worker expects it), and wait for the broker's acknowledgement;
        ``InvalidIntent`` when the broker (or the producer) refuses it as too large."""
        producer = self._producer
        if producer is None or not self.connected:
            raise TransportError(f"not connected to Kafka: {self._last_error}")
        try:
            await producer.send_and_wait(
                self.topics.intents, value, key=intent.agent_id.encode(), headers=list(headers) or None
            )
        except (MessageSizeTooLargeError, RecordTooLargeError) as exc:  # the intent, not the broker
            raise InvalidIntent(f"the broker refuses the intent for {intent.tool!r} ({len(value)} bytes) "
                                f"as too large: {exc!r}; lower SLUICEGATE_MAX_INTENT_BYTES to the topic's "
                                "max.message.bytes", request_id=intent.request_id) from exc
        except KafkaError as exc:
            raise PublishUncertain(f"cannot publish the intent: {exc!r}") from exc

    def emit(self, topic: str, key: str, payload: WireModel, sign: Signer | None = None) -> None:
        """Publish in the background (the agent's reports), with the headers ``sign`` gives its bytes;
        flushed, with a bound, by ``stop``."""
        value = payload.model_dump_json().encode()
        headers = sign(value) if sign is not None else ()
        if not self.connected:
            self._backlog.append((topic, key, value, headers))
            return
        self._send_later(topic, key, value, headers)

    def _send_later(self, topic: str, key: str, value: bytes, headers: RecordHeaders) -> None:
        task = asyncio.get_running_loop().create_task(self._send(topic, key, value, headers))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, topic: str, key: str, value: bytes, headers: RecordHeaders) -> None:
        producer = self._producer
        assert producer is not None
        try:
            await producer.send_and_wait(topic, value, key=key.encode(), headers=list(headers) or None)
        except KafkaError as exc:
            log.error("not delivered to %s (key %s): %r: %s", topic, key, exc, value.decode())

    async def _supervise(self) -> None:
        attempt = 0
        while True:
            try:
                await self._connect()
            except (KafkaError, OSError, TransportError) as exc:
                self._last_error = str(exc) or repr(exc)
                await self._close_clients()
                delay = self._backoff.delay(attempt, self._rng)
                log.warning("Kafka at %s unreachable (%s); retrying in %.2f s", self._bootstrap, exc, delay)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            break
        self._last_error = ""
        await self._start_leases()
        self._connected.set()
        self._spawn(self._read(), "sluicegate-replies")
        while self._backlog:
            self._send_later(*self._backlog.popleft())

    async def _connect(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, client_id=self._client_id, acks="all", linger_ms=0,
            **self._options,
        )
        await self._producer.start()
        try:
            partitions = await asyncio.wait_for(
                self._producer.partitions_for(self.topics.decisions), self._metadata_timeout_s
            )
        except TimeoutError:
            partitions = set()
        if not partitions:
            raise TransportError(f"topic {self.topics.decisions} not found (topics not created yet?)")
        self._partitions = len(partitions)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=_FETCH_MAX_WAIT_MS,
            **self._options,
        )
        await self._consumer.start()

    async def _read(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        await self._has_assignment.wait()
        failures = 0
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=_READ_TIMEOUT_MS)
            except KafkaError as exc:
                delay = self._backoff.delay(failures, self._rng)
                log.warning("reading decisions failed (%r); retrying in %.2f s", exc, delay)
                failures += 1
                await asyncio.sleep(delay)
                continue
            failures = 0
            for tp, records in batches.items():
                for record in records:
                    self._next_offset[tp] = record.offset + 1
                    self.demux.feed(tp.partition, record.key, record.value, record.headers)

    async def _close_clients(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self._consumer = None
        self._producer = None
        self._connected.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

