"""Plain aiokafka responders in place of a worker: the floors ``bench/e2e.py`` measures sluicegate against.

Two modes, both with the worker's own consumer and producer settings (:mod:`streams.runtime.kafka`), its
batch size and its commit interval (flush the producer, then commit the handled offsets):

- ``echo``: per intent, one decision-shaped reply of the worker's decision size, keyed like the intent,
  on the decisions topic: the request/reply latency floor of this broker and client library;
- ``writes``: per intent, the records a worker writes (the decision, then the audit record and the
  changelog and internal records, as many per intent and of the sizes measured on a worker in the same
  run): the I/O floor for throughput.

No parsing beyond finding the request id: what is left is Kafka I/O. The bench starts it as

    python -m bench.floors --bootstrap HOST:PORT --topic-prefix P --partitions 6 --mode writes \
        --decision-bytes 640 --audit-bytes 1500 --audit-per-intent 1 --other-bytes 700 --other-per-intent 2
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import TopicPartition

from bench.broker import kafka_options
from infra.kafka.admin import TopicSpec, ensure_topics
from schemas import TopicNames
from streams.runtime import kafka
from streams.runtime.runner import COMMIT_INTERVAL_S
from streams.topology import APPEND_TIME, COMPACTED

RID_FIELD = b'"request_id"'


@dataclass(frozen=True, slots=True)
class Shape:
    """What a floor writes per intent: sizes in bytes, and records per intent for the audit and the
    other topics (changelogs and internal hops; fractional: spread over the intents)."""

    decision_bytes: int
    audit_bytes: int = 0
    audit_per_intent: float = 0.0
    other_bytes: int = 0
    other_per_intent: float = 0.0


def floor_topics(prefix: str, partitions: int) -> tuple[TopicNames, str, list[TopicSpec]]:
    """A floor's topic names, its changelog topic, and the specs to create (the worker's configs)."""
    names = TopicNames(prefix)
    changelog = f"{prefix}-floor-changelog"
    specs = [TopicSpec(names.intents, partitions, configs=dict(APPEND_TIME)),
             TopicSpec(names.decisions, partitions), TopicSpec(names.audit, partitions),
             TopicSpec(changelog, partitions, configs=dict(COMPACTED))]
    return names, changelog, specs


def request_id(value: bytes) -> bytes:
    """The request id of an intent's JSON, found without parsing it."""
    start = value.index(b'"', value.index(RID_FIELD) + len(RID_FIELD)) + 1
    return value[start:value.index(b'"', start)]


def padded(head: bytes, size: int) -> bytes:
    """``head`` (a JSON object's opening fields, ending with a comma) padded to ``size`` bytes."""
    pad = max(0, size - len(head) - len(b'"pad":""}'))
    return head + b'"pad":"' + b"x" * pad + b'"}'


def reply(rid: bytes, agent: bytes, size: int) -> bytes:
    """A decision-shaped reply of ``size`` bytes: what the bench's collector reads of a decision."""
    decided = datetime.now(UTC).isoformat().encode()
    return padded(b'{"request_id":"' + rid + b'","agent_id":"' + agent + b'","decision":"ALLOW",'
                  b'"final":true,"decided_at":"' + decided + b'",', size)


async def respond(bootstrap: str, prefix: str, partitions: int, mode: str, shape: Shape) -> None:
    """Answer every intent on ``prefix``'s intents topic until cancelled."""
    names, changelog, specs = floor_topics(prefix, partitions)
    options = kafka_options()
    await ensure_topics(bootstrap, specs, options=options)
    consumer = kafka.group_consumer(bootstrap, f"{prefix}-floor", options)
    producer = kafka.producer(bootstrap, options)
    await producer.start()
    await consumer.start()
    consumer.subscribe([names.intents])
    writes = mode == "writes"
    audit = padded(b'{"event_type":"decision",', shape.audit_bytes)
    other = padded(b'{"kind":"state",', shape.other_bytes)
    audit_credit = other_credit = 0.0
    handled: dict[TopicPartition, int] = {}
    last_commit = time.monotonic()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=kafka.FETCH_MAX_WAIT_MS,
                                             max_records=kafka.MAX_RECORDS)
            for tp, records in batches.items():
                for record in records:
                    rid = request_id(record.value)
                    await producer.send(names.decisions, reply(rid, record.key, shape.decision_bytes),
                                        key=record.key)
                    if not writes:
                        continue
                    audit_credit += shape.audit_per_intent
                    while audit_credit >= 1:
                        audit_credit -= 1
                        await producer.send(names.audit, audit, key=rid)
                    other_credit += shape.other_per_intent
                    while other_credit >= 1:
                        other_credit -= 1
                        await producer.send(changelog, other, key=b"d|" + rid, partition=record.partition)
                handled[tp] = records[-1].offset
            if handled and time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                last_commit = time.monotonic()
                await producer.flush()
                await consumer.commit({tp: offset + 1 for tp, offset in handled.items()})
                handled.clear()
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic-prefix", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--mode", choices=("echo", "writes"), required=True)
    parser.add_argument("--decision-bytes", type=int, required=True)
    parser.add_argument("--audit-bytes", type=int, default=0)
    parser.add_argument("--audit-per-intent", type=float, default=0.0)
    parser.add_argument("--other-bytes", type=int, default=0)
    parser.add_argument("--other-per-intent", type=float, default=0.0)
    args = parser.parse_args()
    shape = Shape(args.decision_bytes, args.audit_bytes, args.audit_per_intent, args.other_bytes,
                  args.other_per_intent)
    asyncio.run(respond(args.bootstrap, args.topic_prefix, args.partitions, args.mode, shape))


if __name__ == "__main__":
    main()
