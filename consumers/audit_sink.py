"""The audit sink: audit + outcome topics -> ClickHouse ``audit_events``, stored exactly once.

At-least-once consumption, exactly-once storage: rows are inserted in batches (cut at ``max_rows``
or ``max_delay_s`` after the batch's first record), offsets are committed only after the insert
succeeded, and each insert carries a deduplication token derived from the partition and offset
ranges it covers (a retry in this process is dropped by ClickHouse); a batch re-read after a crash
is collapsed by the ReplacingMergeTree keyed by event id. When ClickHouse is unavailable the sink
retries with backoff and stops fetching once its pipeline is full (its partitions are paused, so
memory stays bounded by three batches); it never drops a record. A record that cannot be decoded
goes to the dead-letter topic with an ``error`` header.

A batch ClickHouse rejects for its data (:data:`PERMANENT_CODES`: a constraint, a value it cannot parse
or hold) is tried ``rejection_attempts`` times with backoff, then split in halves, each stored the same
way, down to the rows ClickHouse rejects alone: those go to the dead-letter topic (the original record,
with the error and its source in the headers) and the sink goes on and commits. Any other failure
(ClickHouse unavailable, overloaded, read-only, an unknown table) is retried until it passes: nothing is
dead-lettered for it.

Pipeline: decoding (validation, rows, Arrow) runs in decoder processes on the other cores while
the event loop keeps fetching; batches are stored and committed strictly in order, at most two in
flight (one decoding, one inserting) besides the one being filled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from typing import Any, Final, Protocol, TypeAlias, TypeVar

import pyarrow as pa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from consumers.audit_rows import COLUMNS, DecodedBatch, Messages, arrow_stream, decode_batch
from consumers.audit_schema import (
    DEFAULT_MIGRATIONS,
    MIGRATIONS_MODES,
    MigrationsMode,
    SchemaBehind,
    prepare_schema,
)
from consumers.audit_store import ClientStore, QueryServer
from infra.clickhouse.migrate import DEFAULT_DATABASE, check_identifier
from schemas import TopicNames
from schemas.topics import dead_letter_headers
from sluicegate.settings import KafkaOptions, Settings

DEFAULT_MAX_ROWS: Final = 25_000
"""Rows per insert under backlog: every insert has a fixed cost in ClickHouse (a part per table, the
views); with 10,000-row batches it was ~7 of the ~45 us of CPU the whole sink spends per row."""
DEFAULT_MAX_DELAY_S: Final = 1.0
DEFAULT_GROUP_ID: Final = "sluicegate-audit-sink"
MAX_IN_FLIGHT: Final = 2
FETCH_BYTES: Final = {"max_partition_fetch_bytes": 16 << 20, "fetch_max_bytes": 64 << 20}
"""Consumer fetch sizes: a whole batch of ~1 KiB records per partition in one round trip."""
PERMANENT_CODES: Final = frozenset({
    6, 27, 38, 41, 72, 376,  # CANNOT_PARSE_TEXT, _INPUT_ASSERTION_FAILED, _DATE, _DATETIME, _NUMBER, _UUID
    53, 70, 117,  # TYPE_MISMATCH, CANNOT_CONVERT_TYPE, INCORRECT_DATA
    131, 190,  # TOO_LARGE_STRING_SIZE, SIZES_OF_ARRAYS_DONT_MATCH
    69, 321,  # ARGUMENT_OUT_OF_BOUND, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
    395, 469,  # FUNCTION_THROW_IF_VALUE_IS_NON_ZERO (a view's throwIf), VIOLATED_CONSTRAINT
})
"""ClickHouse error codes that reject an insert for its data: the same rows fail again however often they
are sent. Every other failure is taken as passing (the server down, busy, read-only) and retried."""
log = logging.getLogger(__name__)
T = TypeVar("T")
Record: TypeAlias = "ConsumerRecord[bytes, bytes]"


class Inserter(Protocol):
    """The part of a clickhouse-connect client the sink writes through."""

    def raw_insert(self, table: str, column_names: Any = ..., insert_block: Any = ...,
                   settings: dict[str, Any] | None = ..., fmt: str | None = ...) -> Any: ...


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """How the sink batches, decodes and retries."""

    database: str = DEFAULT_DATABASE
    topics: TopicNames = field(default_factory=TopicNames)
    group_id: str = DEFAULT_GROUP_ID
    max_rows: int = DEFAULT_MAX_ROWS
    max_delay_s: float = DEFAULT_MAX_DELAY_S
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 5.0
    rejection_attempts: int = 3
    """Tries of an insert ClickHouse rejects for its data before it is split (a row: dead-lettered)."""
    decoders: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Decoder processes; 0 decodes in the event loop's thread (small loads, tools)."""
    kafka_options: KafkaOptions = field(default_factory=dict, repr=False)
    """The Kafka clients' security options (:meth:`Settings.kafka_client_options`)."""
    migrations: MigrationsMode = DEFAULT_MIGRATIONS
    """``apply`` the audit schema's pending migrations at start, or ``skip``: only check that none is
    pending (an insert-only ClickHouse user; :mod:`consumers.audit_schema`)."""


@dataclass(slots=True)
class SinkStats:
    """Counters, for logs, tests and benchmarks."""

    rows_inserted: int = 0
    batches: int = 0
    insert_failures: int = 0
    dead_lettered: int = 0
    rows_rejected: int = 0
    """Rows ClickHouse rejected for their data (dead-lettered; also in ``dead_lettered``)."""


def rejected_data(exc: BaseException) -> bool:
    """Whether ClickHouse refused an insert for its data (:data:`PERMANENT_CODES`), not for its state."""
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    return (isinstance(exc, DatabaseError) and not isinstance(exc, OperationalError)
            and getattr(exc, "code", None) in PERMANENT_CODES)


def dedup_token(ranges: dict[TopicPartition, tuple[int, int]]) -> str:
    """A token naming exactly the partition offset ranges a batch covers."""
    spec = ",".join(f"{tp.topic}:{tp.partition}:{lo}-{hi}"
                    for tp, (lo, hi) in sorted(ranges.items(), key=lambda i: (i[0].topic, i[0].partition)))
    return hashlib.sha256(spec.encode()).hexdigest()


def consumer_for(bootstrap: str, config: SinkConfig) -> AIOKafkaConsumer:
    """The sink's consumer of the audit topic (agents' outcomes reach it through a worker): manual commits,
    from the earliest offset, large fetches."""
    return AIOKafkaConsumer(
        config.topics.audit, bootstrap_servers=bootstrap, group_id=config.group_id,
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=config.max_rows,
        **FETCH_BYTES, **config.kafka_options)


def _decoder_process(parent: int) -> None:
    """Set up a decoder process: the imported modules leave the collector's view (``gc.freeze``: the
    per-batch objects are all it has to scan), and it exits as soon as the sink is gone (even
    SIGKILLed) rather than linger."""
    gc.freeze()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class Decoder:
    """Decodes batches, split over ``workers`` processes (spawned: the parent runs an engine)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool: Executor | None = self._new_pool()

    def _new_pool(self) -> Executor | None:
        if not self.workers:
            return None
        return ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                   initializer=_decoder_process, initargs=(os.getpid(),))

    async def start(self) -> None:
        """Spawn the decoder processes now rather than on the first batch (they import the models)."""
        if self.pool is not None:
            loop, pool = asyncio.get_running_loop(), self.pool
            warm = partial(decode_batch, Messages([], [], [], []))
            await asyncio.gather(*(loop.run_in_executor(pool, warm) for _ in range(self.workers)))

    async def decode(self, messages: Messages) -> DecodedBatch:
        """The batch's rows as one Arrow stream, and the messages that could not be decoded."""
        if self.pool is None:
            return decode_batch(messages)
        loop = asyncio.get_running_loop()
        size = -(-len(messages.values) // self.workers)
        starts = range(0, len(messages.values), size)
        try:
            parts = await asyncio.gather(*(loop.run_in_executor(
                self.pool, partial(decode_batch, messages.slice(start, start + size)))
                for start in starts))
        except BrokenProcessPool:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()  # a decoder process died: start afresh, the caller retries
            raise
        if len(parts) == 1:
            return parts[0]
        batches = [b for part in parts for b in pa.ipc.open_stream(part.arrow).read_all().to_batches()]
        errors = tuple((start + index, error) for start, part in zip(starts, parts, strict=True)
                       for index, error in part.errors)
        return DecodedBatch(arrow_stream(batches), sum(part.rows for part in parts), errors)

    def close(self) -> None:
        """Stop the decoder processes."""
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


@dataclass(slots=True)
class _Batch:
    records: list[Record] = field(default_factory=list)
    ranges: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)
    started: float | None = None

    def add(self, tp: TopicPartition, records: list[Record]) -> None:
        """Records fetched from one partition, in offset order."""
        if not records:
            return
        low = self.ranges[tp][0] if tp in self.ranges else records[0].offset
        self.ranges[tp] = (low, records[-1].offset)
        self.records.extend(records)
        if self.started is None:
            self.started = time.monotonic()

    def messages(self) -> Messages:
        """The records as columns for the decoders."""
        records = self.records
        return Messages([r.topic for r in records], [r.partition for r in records],
                        [r.offset for r in records], [r.value for r in records])


class AuditSink:
    """Consumes, batches, decodes, inserts, then commits; see the module docstring."""

    def __init__(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, inserter: Inserter,
                 config: SinkConfig, decoder: Decoder) -> None:
        self.consumer, self.producer, self.inserter, self.config = consumer, producer, inserter, config
        self.decoder = decoder
        self.table = f"{check_identifier(config.database)}.audit_events"
        self.batch = _Batch()
        self.in_flight: deque[asyncio.Task[None]] = deque()
        self.stats = SinkStats()
        self.stopping = asyncio.Event()
        self._stored = asyncio.Condition()

    def _deadline_in(self) -> float:
        if self.batch.started is None:
            return self.config.max_delay_s
        return max(0.0, self.batch.started + self.config.max_delay_s - time.monotonic())

    async def run(self) -> None:
        """Consume until ``stop()``; store what is buffered on the way out."""
        try:
            while not self.stopping.is_set():
                await self._step()
            self._cut()
            while self.in_flight:
                await self.in_flight.popleft()
        finally:
            for task in self.in_flight:
                task.cancel()

    async def _step(self) -> None:
        while self.in_flight and self.in_flight[0].done():
            await self.in_flight.popleft()  # re-raises what stopped a store
        due = len(self.batch.records) >= self.config.max_rows or self._deadline_in() == 0.0
        if self.batch.ranges and due and len(self.in_flight) < MAX_IN_FLIGHT:
            self._cut()
            return
        if due and self.batch.ranges:  # the pipeline is full: keep the group alive, fetch nothing
            assigned = self.consumer.assignment()
            self.consumer.pause(*assigned)
            try:
                await asyncio.wait([self.in_flight[0]], timeout=0.5)
                await self.consumer.getmany(timeout_ms=0)
            finally:
                self.consumer.resume(*assigned)
            return
        fetched = await self.consumer.getmany(
            timeout_ms=max(1, int(self._deadline_in() * 1000)),
            max_records=self.config.max_rows - len(self.batch.records))
        for tp, records in fetched.items():
            self.batch.add(tp, records)

    async def close(self) -> None:
        """Stop the decoders, the consumer and the producer (after ``run()`` has returned)."""
        self.decoder.close()
        await self.consumer.stop()
        await self.producer.stop()

    def stop(self) -> None:
        """Ask ``run()`` to finish after the current step."""
        self.stopping.set()

    def _cut(self) -> None:
        """Start storing the batch being filled, after the ones already in flight."""
        if not self.batch.ranges:
            return
        previous = self.in_flight[-1] if self.in_flight else None
        self.in_flight.append(asyncio.create_task(self._store(self.batch, previous)))
        self.batch = _Batch()

    async def _store(self, batch: _Batch, previous: asyncio.Task[None] | None) -> None:
        """Decode (alongside the previous batch's insert), dead-letter, insert, commit; in order."""
        messages = batch.messages()
        decoded = await self._retrying("decode", lambda: self.decoder.decode(messages))
        if previous is not None:
            await asyncio.shield(previous)
        for index, error in decoded.errors:
            await self._dead_letter(batch.records[index], error)
        if decoded.rows:
            token = dedup_token(batch.ranges)
            rejection = await self._insert(decoded.arrow, token, self.config.rejection_attempts)
            rejected = 0 if rejection is None else await self._store_rejected(batch, decoded.arrow, token,
                                                                              rejection)
            self.stats.rows_inserted += decoded.rows - rejected
            self.stats.batches += 1
        offsets = {tp: hi + 1 for tp, (_, hi) in batch.ranges.items()}
        await self._retrying("commit", lambda: self.consumer.commit(offsets))
        async with self._stored:
            self._stored.notify_all()

    async def _insert(self, arrow: bytes, token: str, attempts: int) -> str | None:
        """Insert an Arrow stream; retried until it passes, except that a rejection of its data
        (:data:`PERMANENT_CODES`) returns its error after ``attempts`` such tries."""
        delay, rejections = self.config.backoff_initial_s, 0
        while True:
            try:
                await asyncio.to_thread(self.inserter.raw_insert, self.table, list(COLUMNS), arrow,
                                        settings={"insert_deduplication_token": token}, fmt="ArrowStream")
                return None
            except Exception as exc:
                self.stats.insert_failures += 1
                rejections += rejected_data(exc)
                if rejections >= attempts:
                    return f"{type(exc).__name__}: {exc}"
                log.warning("insert failed, retrying in %.2fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.backoff_max_s)

    async def _store_rejected(self, batch: _Batch, arrow: bytes, token: str, error: str) -> int:
        """Store the rows of a rejected batch but those ClickHouse rejects alone, which are dead-lettered
        (their original records); how many were."""
        rows = pa.ipc.open_stream(arrow).read_all()
        log.warning("ClickHouse rejects a batch of %d rows (%s); storing it in parts", rows.num_rows, error)
        rejected = await self._split(rows, token, 0, error)
        sources = rows.select(["source_topic", "source_partition", "source_offset"]).to_pylist()
        by_source = {(r.topic, r.partition, r.offset): r for r in batch.records}
        for index, why in rejected:
            source = sources[index]
            record = by_source[(source["source_topic"], source["source_partition"], source["source_offset"])]
            await self._dead_letter(record, f"rejected by ClickHouse: {why}")
        self.stats.rows_rejected += len(rejected)
        return len(rejected)

    async def _split(self, rows: pa.Table, token: str, start: int, error: str) -> list[tuple[int, str]]:
        """``rows`` (from row ``start`` of a batch) were rejected with ``error``: store them in halves, each
        tried once for a rejection (retried as ever for anything else), down to the rows ClickHouse
        rejects alone, returned with their error by their index in the batch."""
        if rows.num_rows == 1:
            return [(start, error)]
        rejected: list[tuple[int, str]] = []
        half = rows.num_rows // 2
        for first, part in ((start, rows.slice(0, half)), (start + half, rows.slice(half))):
            part_token = f"{token}:{first}+{part.num_rows}"
            part_error = await self._insert(arrow_stream(part.to_batches()), part_token, 1)
            if part_error is not None:
                rejected.extend(await self._split(part, token, first, part_error))
        return rejected

    async def _dead_letter(self, record: Record, error: str) -> None:
        headers = dead_letter_headers(error, record.topic, record.partition, record.offset)
        await self._retrying("dead-letter send", lambda: self.producer.send_and_wait(
            self.config.topics.dead_letter, value=record.value, key=record.key, headers=headers))
        self.stats.dead_lettered += 1
        log.warning("dead-lettered %s[%d]@%d: %s", record.topic, record.partition, record.offset, error)

    async def _retrying(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """Run ``step`` until it succeeds (the fetch loop pauses once the pipeline is full)."""
        delay = self.config.backoff_initial_s
        while True:
            try:
                return await step()
            except Exception as exc:
                log.warning("%s failed, retrying in %.2fs: %s", what, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.backoff_max_s)

    async def wait_stored(self, rows: int) -> None:
        """Return once at least ``rows`` rows were inserted and their offsets committed."""
        async with self._stored:
            await self._stored.wait_for(lambda: self.stats.rows_inserted >= rows)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="audit_sink", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=settings.audit_url, help="ClickHouse URL (chdb:///path or http://)")
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--bootstrap", default=settings.bootstrap_servers)
    parser.add_argument("--topic-prefix", default=settings.topic_prefix)
    parser.add_argument("--group", default=DEFAULT_GROUP_ID)
    parser.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS)
    parser.add_argument("--max-delay", type=float, default=DEFAULT_MAX_DELAY_S)
    parser.add_argument("--decoders", type=int, default=os.cpu_count() or 1,
                        help="decoder processes (0: decode in the sink's own thread)")
    parser.add_argument("--migrations", choices=MIGRATIONS_MODES, default=settings.audit_migrations,
                        help="apply the audit schema's migrations, or skip: only check them (an insert-only "
                             "user) [default: SLUICEGATE_AUDIT_MIGRATIONS or apply]")
    return parser.parse_args(argv)


async def open_sink(bootstrap: str, inserter: Inserter, config: SinkConfig) -> AuditSink:
    """A sink with its consumer, dead-letter producer and decoders started; ``close()`` stops them."""
    consumer = consumer_for(bootstrap, config)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **config.kafka_options)
    try:
        await producer.start()
        await consumer.start()
    except BaseException:
        for client in (consumer, producer):
            with contextlib.suppress(Exception):
                await client.stop()
        raise
    decoder = Decoder(config.decoders)
    await decoder.start()
    return AuditSink(consumer, producer, inserter, config, decoder)


async def serve(url: str, bootstrap: str, config: SinkConfig, inserter: Inserter | None = None,
                on_ready: Callable[[AuditSink], None] | None = None) -> SinkStats:
    """Apply (or check) the schema, serve the query endpoint (embedded store), and run the sink until
    SIGTERM/SIGINT. Raises :class:`SchemaBehind` before touching Kafka when ``config.migrations`` is
    ``skip`` and the schema is behind."""
    from infra.clickhouse import open_client

    client = open_client(url)
    store = ClientStore(client)
    prepare_schema(client, config.database, config.migrations)
    topics = config.topics
    server = QueryServer(store, url)
    sink = await open_sink(bootstrap, inserter or client, config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sink.stop)
    server.start()
    log.info("audit sink consuming %s into %s (query endpoint on port %d)", topics.audit, sink.table,
             server.port)
    try:
        if on_ready is not None:
            on_ready(sink)
        await sink.run()
    finally:
        server.stop()
        await sink.close()
    return sink.stats


def main(argv: list[str] | None = None) -> None:
    """``python -m consumers.audit_sink``: run the sink with settings from the environment."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = SinkConfig(database=args.database, topics=TopicNames(args.topic_prefix), group_id=args.group,
                        max_rows=args.max_rows, max_delay_s=args.max_delay, decoders=args.decoders,
                        kafka_options=Settings().kafka_client_options(), migrations=args.migrations)
    try:
        stats = asyncio.run(serve(args.url, args.bootstrap, config))
    except SchemaBehind as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    log.info("audit sink stopped: %s", stats)


if __name__ == "__main__":
    main()
