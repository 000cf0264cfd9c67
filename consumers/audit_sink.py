"""The audit sink: audit + outcome topics -> ClickHouse ``audit_events``, stored exactly once.

At-least-once consumption, exactly-once storage: rows are inserted column-wise in batches (flushed at
``max_rows`` or ``max_delay_s`` after the batch's first record), offsets are committed only after the
insert succeeded, and each insert carries a deduplication token derived from the partition and offset
ranges it covers (a retry in this process is dropped by ClickHouse); a batch re-read after a crash
is collapsed by the ReplacingMergeTree keyed by event id. When ClickHouse is unavailable the sink
pauses its partitions (nothing more is fetched, memory stays bounded by one batch) and retries with
backoff; it never drops a record. A record that cannot be decoded goes to the dead-letter topic
with an ``error`` header.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from consumers.audit_rows import COLUMNS, ColumnBatch, DecodeError, Source, decode, to_row
from consumers.audit_store import ClientStore, QueryServer
from infra.clickhouse.migrate import DEFAULT_DATABASE, check_identifier
from schemas import TopicNames
from sluicegate.settings import Settings

DEFAULT_MAX_ROWS: Final = 10_000
DEFAULT_MAX_DELAY_S: Final = 1.0
DEFAULT_GROUP_ID: Final = "sluicegate-audit-sink"
log = logging.getLogger(__name__)
T = TypeVar("T")


class Inserter(Protocol):
    """The part of a clickhouse-connect client the sink writes through."""

    def insert(self, table: str, data: Any, column_names: Any = ..., *, column_oriented: bool = ...,
               settings: dict[str, Any] | None = ...) -> Any: ...


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """How the sink batches and retries."""

    database: str = DEFAULT_DATABASE
    topics: TopicNames = field(default_factory=TopicNames)
    group_id: str = DEFAULT_GROUP_ID
    max_rows: int = DEFAULT_MAX_ROWS
    max_delay_s: float = DEFAULT_MAX_DELAY_S
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 5.0


@dataclass(slots=True)
class SinkStats:
    """Counters, for logs, tests and benchmarks."""

    rows_inserted: int = 0
    batches: int = 0
    insert_failures: int = 0
    dead_lettered: int = 0


def dedup_token(ranges: dict[TopicPartition, tuple[int, int]]) -> str:
    """A token naming exactly the partition offset ranges a batch covers."""
    spec = ",".join(f"{tp.topic}:{tp.partition}:{lo}-{hi}"
                    for tp, (lo, hi) in sorted(ranges.items(), key=lambda i: (i[0].topic, i[0].partition)))
    return hashlib.sha256(spec.encode()).hexdigest()


class AuditSink:
    """Consumes, batches, inserts, then commits; see the module docstring."""

    def __init__(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, inserter: Inserter,
                 config: SinkConfig) -> None:
        self.consumer, self.producer, self.inserter, self.config = consumer, producer, inserter, config
        self.table = f"{check_identifier(config.database)}.audit_events"
        self.batch = ColumnBatch()
        self.ranges: dict[TopicPartition, tuple[int, int]] = {}
        self.batch_started: float | None = None
        self.stats = SinkStats()
        self.stopping = asyncio.Event()
        self._stored = asyncio.Condition()

    def _deadline_in(self) -> float:
        if self.batch_started is None:
            return self.config.max_delay_s
        return max(0.0, self.batch_started + self.config.max_delay_s - time.monotonic())

    async def run(self) -> None:
        """Consume until ``stop()``; flush what is buffered on the way out."""
        while not self.stopping.is_set():
            if self.ranges and (len(self.batch) >= self.config.max_rows or self._deadline_in() == 0.0):
                await self.flush()
                continue
            fetched = await self.consumer.getmany(
                timeout_ms=max(1, int(self._deadline_in() * 1000)),
                max_records=self.config.max_rows - len(self.batch),
            )
            for records in fetched.values():
                for record in records:
                    await self._take(record)
        if self.ranges:
            await self.flush()

    def stop(self) -> None:
        """Ask ``run()`` to finish after the current step."""
        self.stopping.set()

    async def _take(self, record: ConsumerRecord[bytes, bytes]) -> None:
        tp = TopicPartition(record.topic, record.partition)
        try:
            audit = decode(record.value, outcome=record.topic == self.config.topics.outcomes)
        except DecodeError as exc:
            await self._dead_letter(record, str(exc))
        else:
            self.batch.append(to_row(audit, Source(record.topic, record.partition, record.offset)))
        low = self.ranges[tp][0] if tp in self.ranges else record.offset
        self.ranges[tp] = (low, record.offset)
        if self.batch_started is None:
            self.batch_started = time.monotonic()

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], error: str) -> None:
        headers = [("error", error[:4000].encode()), ("source_topic", record.topic.encode()),
                   ("source_partition", str(record.partition).encode()),
                   ("source_offset", str(record.offset).encode())]
        await self._retrying("dead-letter send", lambda: self.producer.send_and_wait(
            self.config.topics.dead_letter, value=record.value, key=record.key, headers=headers))
        self.stats.dead_lettered += 1
        log.warning("dead-lettered %s[%d]@%d: %s", record.topic, record.partition, record.offset, error)

    async def _retrying(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """Run ``step`` until it succeeds; between attempts partitions stay paused and the group alive."""
        delay, paused = self.config.backoff_initial_s, False
        try:
            while True:
                try:
                    return await step()
                except Exception as exc:
                    self.stats.insert_failures += what == "insert"
                    log.warning("%s failed, retrying in %.2fs: %s", what, delay, exc)
                    if not paused:
                        self.consumer.pause(*self.consumer.assignment())
                        paused = True
                    await self.consumer.getmany(timeout_ms=int(delay * 1000))
                    delay = min(delay * 2, self.config.backoff_max_s)
        finally:
            if paused:
                self.consumer.resume(*self.consumer.assignment())

    async def flush(self) -> None:
        """Insert the batch (retrying until it succeeds), then commit its offsets."""
        if len(self.batch):
            token = dedup_token(self.ranges)
            await self._retrying("insert", lambda: asyncio.to_thread(
                self.inserter.insert, self.table, self.batch.columns, list(COLUMNS),
                column_oriented=True, settings={"insert_deduplication_token": token}))
            self.stats.rows_inserted += len(self.batch)
            self.stats.batches += 1
        offsets = {tp: hi + 1 for tp, (_, hi) in self.ranges.items()}
        await self._retrying("commit", lambda: self.consumer.commit(offsets))
        self.batch.clear()
        self.ranges.clear()
        self.batch_started = None
        async with self._stored:
            self._stored.notify_all()

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
    return parser.parse_args(argv)


async def serve(url: str, bootstrap: str, config: SinkConfig, inserter: Inserter | None = None,
                on_ready: Callable[[AuditSink], None] | None = None) -> SinkStats:
    """Migrate, serve the query endpoint (embedded store), and run the sink until SIGTERM/SIGINT."""
    from infra.clickhouse import open_client

    client = open_client(url)
    store = ClientStore(client)
    store.migrate(config.database)
    topics = config.topics
    consumer = AIOKafkaConsumer(
        topics.audit, topics.outcomes, bootstrap_servers=bootstrap, group_id=config.group_id,
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=config.max_rows,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    server = QueryServer(store, url)
    await producer.start()
    await consumer.start()
    sink = AuditSink(consumer, producer, inserter or client, config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sink.stop)
    server.start()
    log.info("audit sink consuming %s, %s into %s (query endpoint on port %d)",
             topics.audit, topics.outcomes, sink.table, server.port)
    try:
        if on_ready is not None:
            on_ready(sink)
        await sink.run()
    finally:
        server.stop()
        await consumer.stop()
        await producer.stop()
    return sink.stats


def main(argv: list[str] | None = None) -> None:
    """``python -m consumers.audit_sink``: run the sink with settings from the environment."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = SinkConfig(database=args.database, topics=TopicNames(args.topic_prefix), group_id=args.group,
                        max_rows=args.max_rows, max_delay_s=args.max_delay)
    stats = asyncio.run(serve(args.url, args.bootstrap, config))
    log.info("audit sink stopped: %s", stats)


if __name__ == "__main__":
    main()
