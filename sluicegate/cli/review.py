"""The CLI reviewer's Kafka side: which approval requests are pending, and sending verdicts on them.

Pending = a request on the approval-requests topic without a final decision on the approval-results
topic. Both are keyed by request id, so the default partitioner puts a request and its final in the
same partition of each topic (the partition the key's hash gives among the topic's partitions):
- ``approve`` / ``deny`` with a full request id read that one partition of each topic;
- ``list`` and a prefix read every partition.
approval-results is compacted (one final per request), so it is read from its beginning; only the
records keyed by a request just read are decoded. The fleet-wide decisions topic is never read.

Trust: approval requests and finals are signed by the workers (Ed25519, :func:`verify_request` against
``SLUICEGATE_TRUST_PUBLIC_KEY``); a record that does not verify is ignored and reported, never listed as
approvable nor taken as a final. A request whose intent digest is not the digest of the intent it shows
is ignored too, with or without a key, so the params a reviewer sees are the ones approved. Verdicts
take the same path as Slack's (the approvals topic, keyed by request id, with the request's intent
digest), signed with the reviewer's credential (``sg-auth`` and ``sg-signer: reviewer:<name>``); the
processor applies the same checks to both. Trust off (``SLUICEGATE_TRUST_OFF=1``, a deployment without
keys) is the only way to read unsigned records or send an unsigned verdict; a configured key is always
used.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from schemas import ApprovalRequest, ApprovalVerdict, TopicNames, VerdictKind
from schemas.policy import has_redacted
from sluicegate.routing import partition_for
from sluicegate.settings import PLAINTEXT, KafkaOptions
from sluicegate.trust import SignerCredential, TrustError, verify_request

MIN_PREFIX = 4
"""The shortest request id prefix ``approve`` and ``deny`` accept."""
PUBLIC_KEY_SETTING = "SLUICEGATE_TRUST_PUBLIC_KEY"
CREDENTIAL_SETTING = "SLUICEGATE_REVIEWER_CREDENTIAL"
TRUST_OFF_SETTING = "SLUICEGATE_TRUST_OFF"
NOT_SIGNED = "not signed by the workers"

Record: TypeAlias = ConsumerRecord[bytes, bytes]


class ReviewError(Exception):
    """A reviewer command cannot be carried out; the message says why."""


# -- trust: what the reviewer side accepts from the workers and how it signs ---------------------------


def _public_key(text: str) -> str:
    """``text`` when it is an Ed25519 public key in base64url; TrustError naming the setting otherwise."""
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
        Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise TrustError(f"{PUBLIC_KEY_SETTING} is not an Ed25519 public key (32 bytes, base64url)") from exc
    return text.strip()


@dataclass(frozen=True)
class ReviewTrust:
    """How the reviewer side (the CLI, the Slack bot) checks what the workers publish.

    ``public_key``: the workers' request key; every approval request and final must verify against it.
    ``off``: trust off, the only state in which unsigned records are read and unsigned verdicts sent.
    """

    public_key: str | None
    off: bool = False

    def __post_init__(self) -> None:
        if self.public_key is None and not self.off:
            raise TrustError(f"no {PUBLIC_KEY_SETTING} and trust is not off")

    @classmethod
    def configure(cls, public_key: str | None, trust_off: bool, *, who: str) -> ReviewTrust:
        """The trust of ``who`` (a command, the bot); TrustError naming the missing setting."""
        if public_key and public_key.strip():
            return cls(_public_key(public_key), off=trust_off)
        if trust_off:
            return cls(None, off=True)
        raise TrustError(
            f"{who} needs {PUBLIC_KEY_SETTING}, the workers' public key (sluicegate trust init prints it), "
            f"to verify approval requests; set {TRUST_OFF_SETTING}=1 only for a deployment without trust"
        )

    def verify(self, record: Record) -> None:
        """Raise TrustError unless ``record`` was signed by the workers (anything goes with no key)."""
        if self.public_key is not None:
            try:
                verify_request(self.public_key, record.headers, record.value or b"")
            except TrustError as exc:
                raise TrustError(f"{NOT_SIGNED} ({exc})" if str(exc) != NOT_SIGNED else NOT_SIGNED) from exc


def digest_mismatch(request: ApprovalRequest) -> str | None:
    """Why ``request`` must not be shown, when its intent digest is not the digest of its intent. An intent
    with sensitive params redacted (``docs/audit.md``) cannot be digested again: there the workers'
    signature alone binds what is shown to the digest approved."""
    actual = request.intent.digest()
    if actual == request.intent_digest or has_redacted(request.intent.params):
        return None
    return (f"intent_digest {request.intent_digest[:12]}... is not the digest of the intent shown "
            f"({actual[:12]}...): what would be approved is not what is shown")


def where(record: Record) -> str:
    """``topic[partition]@offset``, to name a record in a message."""
    return f"{record.topic}[{record.partition}]@{record.offset}"


@dataclass(frozen=True)
class Reviewer:
    """Who sends a verdict: a reviewer credential's name, or a bare name (unsigned) with trust off only."""

    name: str
    credential: SignerCredential | None = None

    @classmethod
    def resolve(cls, credential: str | None, name: str | None, *, trust_off: bool) -> Reviewer:
        """The reviewer from ``SLUICEGATE_REVIEWER_CREDENTIAL`` (``name`` must be absent or the same)."""
        given = name.strip() if name is not None else None
        if credential and credential.strip():
            try:
                signer = SignerCredential.parse(credential, "reviewer")
            except (TrustError, UnicodeDecodeError) as exc:
                raise ReviewError(f"{CREDENTIAL_SETTING} is not a reviewer credential: {exc}") from exc
            if given is not None and given != signer.name:
                raise ReviewError(f"--reviewer {given} is not the reviewer of {CREDENTIAL_SETTING} "
                                  f"({signer.name}); verdicts are sent in the credential's name")
            return cls(signer.name, signer)
        if not trust_off:
            raise ReviewError(
                f"a verdict needs {CREDENTIAL_SETTING}, your reviewer credential (sluicegate trust reviewer "
                "DIR NAME prints it): the workers reject unsigned verdicts; nothing was sent"
            )
        if not given:
            raise ReviewError("a verdict needs a reviewer (--reviewer)")
        return cls(given)

    def headers(self, value: bytes) -> list[tuple[str, bytes]] | None:
        """The record headers of a verdict ``value``: its authenticator and signer, none unsigned."""
        return self.credential.headers(value) if self.credential is not None else None


# -- reading: pending requests ------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingRequest:
    """A request still waiting for a final decision; ``overdue`` once its deadline has passed."""

    request: ApprovalRequest
    overdue: bool


@dataclass(frozen=True)
class Ignored:
    """A record the reviewer side did not take: where it is, why, and the request id it claims."""

    record: str
    why: str
    request_id: str | None = None

    def __str__(self) -> str:
        claimed = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.record}{claimed}: {self.why}"


def _claimed_id(record: Record) -> str | None:
    """The request id a record claims, read leniently (it is only named in a message)."""
    try:
        fields = json.loads(record.value or b"")
    except ValueError:
        return None
    claimed = fields.get("request_id") if isinstance(fields, dict) else None
    return str(claimed)[:64] if claimed is not None else None


@dataclass
class _Reading:
    trust: ReviewTrust
    ignored: list[Ignored] = field(default_factory=list)

    def ignore(self, record: Record, why: str) -> None:
        self.ignored.append(Ignored(where(record), why, _claimed_id(record)))

    def requests(self, records: Iterable[Record]) -> dict[UUID, ApprovalRequest]:
        """The approvable requests of ``records``: signed by the workers, valid, digest matching."""
        requests: dict[UUID, ApprovalRequest] = {}
        for record in records:
            try:
                self.trust.verify(record)
                request = ApprovalRequest.model_validate_json(record.value or b"")
            except TrustError as exc:
                self.ignore(record, str(exc))
                continue
            except ValidationError as exc:
                self.ignore(record, f"not an approval request ({exc.error_count()} errors)")
                continue
            mismatch = digest_mismatch(request)
            if mismatch is not None:
                self.ignore(record, mismatch)
                continue
            requests.setdefault(request.request_id, request)
        return requests

    def final_ids(self, records: Iterable[Record]) -> set[UUID]:
        """The request ids with a final: signed by the workers, a JSON object with ``final`` set, under
        its own key."""
        finals: set[UUID] = set()
        for record in records:
            try:
                self.trust.verify(record)
            except TrustError as exc:
                self.ignore(record, f"a final {exc}")
                continue
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


@dataclass(frozen=True)
class Pending:
    """What ``approvals list`` shows: the pending requests, earliest deadline first, and what was
    ignored (records that did not verify or whose digest does not match)."""

    requests: list[PendingRequest]
    ignored: list[Ignored]


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


async def _read_pending(
    consumer: AIOKafkaConsumer, topics: TopicNames, request_id: UUID | None, reading: _Reading
) -> list[ApprovalRequest]:
    key = str(request_id).encode() if request_id is not None else None
    partitions = await _partitions(consumer, topics.approval_requests, key)
    if request_id is not None:
        records = await _read(consumer, partitions, lambda record: record.key == key)
    else:
        records = await _read(consumer, partitions, lambda _: True)
    requests = reading.requests(records)
    if request_id is not None:
        requests = {k: v for k, v in requests.items() if k == request_id}
    if not requests:
        return []
    results = await _partitions(consumer, topics.approval_results, key)
    if not results:
        raise ReviewError(f"topic {topics.approval_results} does not exist (a worker creates it)")
    wanted = {str(r).encode() for r in requests}
    finals = reading.final_ids(await _read(consumer, results, lambda record: record.key in wanted))
    return [r for r in requests.values() if r.request_id not in finals]


async def pending_requests(
    bootstrap: str, topics: TopicNames, now: datetime, *, trust: ReviewTrust, request_id: UUID | None = None,
    options: KafkaOptions = PLAINTEXT,
) -> Pending:
    """Requests with no final decision yet, earliest deadline first (only ``request_id`` when given).

    The results are read after the requests, so a request decided before it was read is never listed.
    """
    reading = _Reading(trust)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **options)
    try:
        await consumer.start()
        open_ = await _read_pending(consumer, topics, request_id, reading)
    except KafkaError as exc:
        where_ = f"{topics.approval_requests} and {topics.approval_results}"
        raise ReviewError(f"cannot read {where_} from Kafka at {bootstrap}: {exc}") from exc
    finally:
        await consumer.stop()
    pending = [PendingRequest(r, now >= r.deadline_at) for r in open_]
    return Pending(sorted(pending, key=lambda p: p.request.deadline_at), reading.ignored)


# -- writing: verdicts --------------------------------------------------------------------------------


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
    bootstrap: str, topics: TopicNames, request_id: str, now: datetime, trust: ReviewTrust,
    options: KafkaOptions,
) -> ApprovalRequest:
    """The pending request ``request_id`` names: a full id (read in its partitions only) or a prefix."""
    prefix = _prefix(request_id)
    full = _full_id(prefix)
    pending = await pending_requests(bootstrap, topics, now, trust=trust, request_id=full, options=options)
    wanted = str(full) if full is not None else prefix
    matches = [p.request for p in pending.requests if str(p.request.request_id).startswith(wanted)]
    if not matches:
        ignored = [i for i in pending.ignored if (i.request_id or "").lower().startswith(wanted)]
        note = "; ignored: " + "; ".join(map(str, ignored)) if ignored else ""
        raise ReviewError(f"no pending approval request {request_id}{note}")
    if len(matches) > 1:
        raise ReviewError(f"request id {request_id} is ambiguous: {len(matches)} requests match")
    return matches[0]


async def submit_verdict(
    bootstrap: str, topics: TopicNames, request_id: str, *, reviewer: Reviewer, verdict: VerdictKind,
    reason: str | None, now: datetime, trust: ReviewTrust, options: KafkaOptions = PLAINTEXT,
) -> ApprovalVerdict:
    """Send a verdict, signed by ``reviewer``, for the request ``request_id`` (a full id or a unique
    prefix) still pending; unsigned only with trust off."""
    if reviewer.credential is None and not trust.off:
        raise ReviewError(f"a verdict needs {CREDENTIAL_SETTING} (trust is on); nothing was sent")
    if not reviewer.name.strip():
        raise ReviewError("a verdict needs a reviewer (--reviewer)")
    if verdict is VerdictKind.DENY and not (reason and reason.strip()):
        raise ReviewError("a deny needs a reason (--reason)")
    request = await _find_pending(bootstrap, topics, request_id, now, trust, options)
    answer = ApprovalVerdict(
        request_id=request.request_id, intent_digest=request.intent_digest, reviewer=reviewer.name.strip(),
        verdict=verdict, reason=reason.strip() if reason else None, source="cli", decided_at=now,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, **options)
    try:
        await producer.start()
        key, value = str(request.request_id).encode(), answer.model_dump_json().encode()
        await producer.send_and_wait(topics.approvals, key=key, value=value, headers=reviewer.headers(value))
    except KafkaError as exc:
        raise ReviewError(f"cannot send the verdict to Kafka at {bootstrap}: {exc}") from exc
    finally:
        await producer.stop()
    return answer
