"""The CLI reviewer's Kafka side: which approval requests are pending, and sending verdicts on them.

Pending = a request on the approval-requests topic without a final decision on the approval-results
topic. Both are keyed by request id, so the default partitioner puts a request and its final in the
same partition of each topic (the partition the key's hash gives among the topic's partitions):
- ``approve`` / ``deny`` with a full request id read that one partition of each topic;
- ``list`` and a prefix read every partition.
approval-results is compacted (one final per request), so it is read from its beginning; only the
records keyed by a request just read are decoded. The fleet-wide decisions topic is never read.

Verdicts take the same path as Slack's (the approvals topic, keyed by request id, with the request's
intent digest); the processor applies the same checks to both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from schemas import ApprovalRequest, ApprovalVerdict, TopicNames, VerdictKind
from sluicegate.routing import partition_for

MIN_PREFIX = 4
"""The shortest request id prefix ``approve`` and ``deny`` accept."""

Record: TypeAlias = ConsumerRecord[bytes, bytes]


class ReviewError(Exception):
    """A reviewer command cannot be carried out; the message says why."""


@dataclass(frozen=True)
class PendingRequest:
    """A request still waiting for a final decision; ``overdue`` once its deadline has passed."""

    request: ApprovalRequest
    overdue: bool


async def _partitions(consumer: AIOKafkaConsumer, topic: str, key: bytes | None) -> list[TopicPartition]:
    """Every partition of ``topic``, or only the one that holds ``key`` when given ([] if no topic)."""
    cluster = await consumer._client.fetch_all_metadata()
    numbers = sorted(cluster.partitions_for_topic(topic) or [])
    if numbers and key is not None:
        numbers = [partition_for(key, len(numbers))]
    return [TopicPartition(topic, p) for p in numbers]


async def _read(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], keep: Callable[[Record], bool]
) -> list[Record]:
    """The records of ``partitions`` that ``keep`` accepts, from the beginning to the current end."""
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    ends = await consumer.end_offsets(partitions)
    records: list[Record] = []
    while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
        batch = await consumer.getmany(*partitions, timeout_ms=1000)
        records.extend(r for tp, rs in batch.items() for r in rs if r.offset < ends[tp] and keep(r))
    return records


def _parse_requests(records: Iterable[Record]) -> dict[UUID, ApprovalRequest]:
    requests: dict[UUID, ApprovalRequest] = {}
    for record in records:
        try:
            request = ApprovalRequest.model_validate_json(record.value or b"")
        except ValidationError:
            continue  # not ours to judge here; the bot dead-letters it
        requests.setdefault(request.request_id, request)
    return requests


def _final_ids(records: Iterable[Record]) -> set[UUID]:
    """The request ids with a final decision: a JSON object with ``final`` set, under its own key."""
    finals: set[UUID] = set()
    for record in records:
        try:
            fields = json.loads(record.value or b"")
            if not (isinstance(fields, dict) and fields.get("final", True) and fields.get("request_id")):
                continue
            request_id = UUID(str(fields["request_id"]))
        except ValueError:
            continue
        if record.key == str(request_id).encode():
            finals.add(request_id)
    return finals


async def _read_pending(
    consumer: AIOKafkaConsumer, topics: TopicNames, request_id: UUID | None
) -> list[ApprovalRequest]:
    key = str(request_id).encode() if request_id is not None else None
    partitions = await _partitions(consumer, topics.approval_requests, key)
    requests = _parse_requests(await _read(consumer, partitions, lambda _: True))
    if request_id is not None:
        requests = {k: v for k, v in requests.items() if k == request_id}
    if not requests:
        return []
    results = await _partitions(consumer, topics.approval_results, key)
    if not results:
        raise ReviewError(f"topic {topics.approval_results} does not exist (a worker creates it)")
    wanted = {str(r).encode() for r in requests}
    finals = _final_ids(await _read(consumer, results, lambda record: record.key in wanted))
    return [r for r in requests.values() if r.request_id not in finals]


async def pending_requests(
    bootstrap: str, topics: TopicNames, now: datetime, *, request_id: UUID | None = None
) -> list[PendingRequest]:
    """Requests with no final decision yet, earliest deadline first (only ``request_id`` when given).

    The results are read after the requests, so a request decided before it was read is never listed.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        await consumer.start()
        open_ = await _read_pending(consumer, topics, request_id)
    except KafkaError as exc:
        where = f"{topics.approval_requests} and {topics.approval_results}"
        raise ReviewError(f"cannot read {where} from Kafka at {bootstrap}: {exc}") from exc
    finally:
        await consumer.stop()
    pending = [PendingRequest(r, now >= r.deadline_at) for r in open_]
    return sorted(pending, key=lambda p: p.request.deadline_at)


def _prefix(request_id: str) -> str:
    wanted = request_id.strip().lower()
    if len(wanted) < MIN_PREFIX:
        raise ReviewError(f"request id {request_id!r} is too short: give {MIN_PREFIX}+ characters")
    return wanted


def _full_id(prefix: str) -> UUID | None:
    try:
        return UUID(prefix)
    except ValueError:
        return None


async def _find_pending(
    bootstrap: str, topics: TopicNames, request_id: str, now: datetime
) -> ApprovalRequest:
    """The pending request ``request_id`` names: a full id (read in its partitions only) or a prefix."""
    prefix = _prefix(request_id)
    full = _full_id(prefix)
    pending = await pending_requests(bootstrap, topics, now, request_id=full)
    wanted = str(full) if full is not None else prefix
    matches = [p.request for p in pending if str(p.request.request_id).startswith(wanted)]
    if not matches:
        raise ReviewError(f"no pending approval request {request_id}")
    if len(matches) > 1:
        raise ReviewError(f"request id {request_id} is ambiguous: {len(matches)} requests match")
    return matches[0]


async def submit_verdict(
    bootstrap: str, topics: TopicNames, request_id: str, *, reviewer: str, verdict: VerdictKind,
    reason: str | None, now: datetime,
) -> ApprovalVerdict:
    """Send a verdict for the request ``request_id`` (a full id or a unique prefix) still pending."""
    if verdict is VerdictKind.DENY and not (reason and reason.strip()):
        raise ReviewError("a deny needs a reason (--reason)")
    if not reviewer.strip():
        raise ReviewError("a verdict needs a reviewer (--reviewer)")
    request = await _find_pending(bootstrap, topics, request_id, now)
    answer = ApprovalVerdict(
        request_id=request.request_id, intent_digest=request.intent_digest, reviewer=reviewer.strip(),
        verdict=verdict, reason=reason.strip() if reason else None, source="cli", decided_at=now,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    try:
        await producer.start()
        key, value = str(request.request_id).encode(), answer.model_dump_json().encode()
        await producer.send_and_wait(topics.approvals, key=key, value=value)
    except KafkaError as exc:
        raise ReviewError(f"cannot send the verdict to Kafka at {bootstrap}: {exc}") from exc
    finally:
        await producer.stop()
    return answer
