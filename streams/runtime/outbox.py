"""The records a worker produces, gathered per topic partition into the producer's batches and handed to
it a whole batch at a time (:meth:`AIOKafkaProducer.send_batch`).

Why. aiokafka's ``send()`` costs 16-20 µs of CPU per record (a future per record, its partition and
size checks, a result per record when the batch is acknowledged); a worker writes about five records
per intent. A batch built here and sent whole costs about half (docs/performance.md). Nothing waits
longer for it: ``send()`` hands records to the producer's sender only when the event loop runs it,
i.e. after the batch of records in hand is handled, which is when the runner sends the outbox.

Order: records are sent in the order they were added, per partition, and every batch is sent in the
order its first record was added: a record's table writes, added before its outputs, are handed to the
producer before them, as with ``send()``. A batch that fills sends every batch before it, then starts
anew, so that order holds across partitions too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import RecordMetadata

Headers = list[tuple[str, bytes]]


@dataclass(slots=True)
class Sent:
    """A batch handed to the producer: acknowledged when ``future`` is done; ``count`` records from the
    offset its result gives."""

    future: asyncio.Future[RecordMetadata]
    count: int

    def last_offset(self) -> int:
        """The offset of the batch's last record (once acknowledged)."""
        return int(self.future.result().offset) + self.count - 1


@dataclass(slots=True)
class _Open:
    """A batch being filled."""

    builder: Any
    count: int = 0


class Outbox:
    """Records to produce, batched per topic partition until :meth:`send`."""

    def __init__(self, producer: AIOKafkaProducer, on_sent: Callable[[str, int, Sent], None]) -> None:
        self.producer = producer
        self.on_sent = on_sent
        """Called with (topic, partition, :class:`Sent`) for every batch handed to the producer."""
        self.max_record_bytes: int = producer._max_request_size  # what send() refuses over
        self.batches: dict[tuple[str, int], _Open] = {}

    async def add(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
                  headers: Headers | None) -> None:
        """Queue one record; MessageSizeTooLargeError (nothing queued) when the producer would refuse it."""
        headers = headers or []
        if DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers) > self.max_record_bytes:
            raise MessageSizeTooLargeError(f"a record larger than {self.max_record_bytes} bytes")
        batch = self.batches.get((topic, partition))
        if batch is None:
            batch = self.batches[(topic, partition)] = _Open(self.producer.create_batch())
        if batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            await self.send()  # full: it and every batch begun before it go first
            batch = self.batches[(topic, partition)] = _Open(self.producer.create_batch())
            batch.builder.append(timestamp=None, key=key, value=value, headers=headers)
        batch.count += 1

    async def send(self) -> None:
        """Hand every batch to the producer, in the order each was begun."""
        while self.batches:
            (topic, partition), batch = next(iter(self.batches.items()))
            del self.batches[(topic, partition)]
            future = await self.producer.send_batch(batch.builder, topic, partition=partition)
            self.on_sent(topic, partition, Sent(future, batch.count))

    def drop(self) -> None:
        """Forget what was not sent (a fenced worker sends nothing more)."""
        self.batches.clear()
