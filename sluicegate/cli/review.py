"""The CLI reviewer's Kafka side: list pending approval requests, send verdicts on the reviewer topic.

Pending = requests on the approval-requests topic without a final decision on the decisions topic.
Verdicts take the same path as Slack's (the approvals topic, keyed by request id, with the request's
intent digest); the processor applies the same checks to both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from schemas import ApprovalRequest, ApprovalVerdict, TopicNames, VerdictKind

CLOCK_SKEW = timedelta(minutes=5)
"""How far before a request's creation its decisions are looked for (producers' clocks differ)."""
MIN_PREFIX = 4


class ReviewError(Exception):
    """A reviewer command cannot be carried out; the message says why."""


@dataclass(frozen=True)
class PendingRequest:
    """A request still waiting for a final decision; ``overdue`` once its deadline has passed."""

    request: ApprovalRequest
    overdue: bool


async def _records(
    bootstrap: str, topic: str, since: datetime | None = None
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` up to its current end (from ``since`` by timestamp when given)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        await consumer.start()
        cluster = await consumer._client.fetch_all_metadata()
        partitions = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or [])]
        if not partitions:
            return []
        consumer.assign(partitions)
        await _seek(consumer, partitions, since)
        ends = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(*partitions, timeout_ms=1000)
            records.extend(r for tp, rs in batch.items() for r in rs if r.offset < ends[tp])
        return records
    except KafkaError as exc:
        raise ReviewError(f"cannot read {topic} from Kafka at {bootstrap}: {exc}") from exc
    finally:
        await consumer.stop()


async def _seek(consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since: datetime | None) -> None:
    await consumer.seek_to_beginning(*partitions)
    if since is None:
        return
    found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
    for tp, offset in found.items():
        if offset is None:
            await consumer.seek_to_end(tp)
        else:
            consumer.seek(tp, offset.offset)


def _parse_requests(records: Iterable[ConsumerRecord[bytes, bytes]]) -> dict[UUID, ApprovalRequest]:
    requests: dict[UUID, ApprovalRequest] = {}
    for record in records:
        try:
            request = ApprovalRequest.model_validate_json(record.value or b"")
        except ValidationError:
            continue  # not ours to judge here; the bot dead-letters it
        requests.setdefault(request.request_id, request)
    return requests


def _final_ids(records: Iterable[ConsumerRecord[bytes, bytes]], wanted: set[UUID]) -> set[UUID]:
    finals: set[UUID] = set()
    for record in records:
        try:
            fields = json.loads(record.value or b"")
            if not (isinstance(fields, dict) and fields.get("final", True) and fields.get("request_id")):
                continue
            request_id = UUID(str(fields["request_id"]))
        except ValueError:
            continue
        if request_id in wanted:
            finals.add(request_id)
    return finals


async def pending_requests(bootstrap: str, topics: TopicNames, now: datetime) -> list[PendingRequest]:
    """Requests with no final decision yet, earliest deadline first."""
    requests = _parse_requests(await _records(bootstrap, topics.approval_requests))
    if not requests:
        return []
    since = min(r.created_at for r in requests.values()) - CLOCK_SKEW
    finals = _final_ids(await _records(bootstrap, topics.decisions, since), set(requests))
    open_ = [r for r in requests.values() if r.request_id not in finals]
    pending = [PendingRequest(r, now >= r.deadline_at) for r in open_]
    return sorted(pending, key=lambda p: p.request.deadline_at)


def _match(requests: Iterable[ApprovalRequest], request_id: str) -> ApprovalRequest:
    wanted = request_id.strip().lower()
    if len(wanted) < MIN_PREFIX:
        raise ReviewError(f"request id {request_id!r} is too short: give {MIN_PREFIX}+ characters")
    matches = [r for r in requests if str(r.request_id).startswith(wanted)]
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
    request = _match([p.request for p in await pending_requests(bootstrap, topics, now)], request_id)
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
