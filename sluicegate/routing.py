"""Reply routing: which decision partitions an agent reads, and how replies find their waiting call.

Decisions are keyed by ``agent_id`` like intents, so the producer's default partitioner puts an agent's
decisions on one partition of the decisions topic. ``partition_for`` computes that partition exactly as
Kafka's (and aiokafka's) default partitioner does — murmur2 of the key bytes, made positive, modulo the
partition count — so a gate assigns itself only the partitions of the agents it serves.

``ReplyDemux`` is the pure half of the reply path: records from those partitions are fed in and routed by
``request_id`` to the calls waiting for them; everything else on the partition is skipped.

A call made with a credential (trust on) waits with a :class:`ReplyCheck`: a reply reaches it only if
one of its ``sg-auth`` headers authenticates the exact record value under the agent's key (the worker
adds one per key id of its ring; the agent's key id must be one of them) and the decision names the
request, the agent and the digest of the action asked about. Anything else for that request — no
header, a wrong MAC, another digest, an unparseable value — is dropped, logged and remembered on the
waiter (``rejected``), and the call keeps waiting for the real reply until its deadline: someone who can
produce to the decisions topic can neither answer for the worker nor cut the wait short. Without a
check (trust off) an unusable reply ends the call at once, as governance unavailable.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from uuid import UUID

from pydantic import ValidationError

from schemas import Decision
from sluicegate.trust import AUTH_HEADER, TrustError, check, split_authenticator

log = logging.getLogger(__name__)

_MASK32 = 0xFFFFFFFF
_SEED = 0x9747B28C
_M = 0x5BD1E995
_R = 24
MAX_AUTHENTICATORS = 8
"""Most ``sg-auth`` headers of a reply checked under the agent's key id (a worker sends one per key id)."""
MAX_REJECTED_KEPT = 8
"""Most reasons of dropped replies a waiter keeps (all are counted)."""

Headers = Iterable[tuple[str, bytes | None]]


def murmur2(data: bytes) -> int:
    """32-bit MurmurHash2 as Kafka's Java client computes it (``Utils.murmur2``), as an unsigned int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK32
        k ^= k >> _R
        k = (k * _M) & _MASK32
        h = ((h * _M) & _MASK32) ^ k
    tail = data[whole:]
    if tail:
        for shift, byte in reversed(list(enumerate(tail))):
            h ^= byte << (8 * shift)
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition the default partitioner picks for ``key`` among ``partitions``."""
    if partitions < 1:
        raise ValueError(f"partition count must be positive, got {partitions}")
    data = key.encode() if isinstance(key, str) else key
    return (murmur2(data) & 0x7FFFFFFF) % partitions


class BadReply(Exception):
    """A reply for a waiting call that cannot be used (unparseable, or for another agent)."""


@dataclass(frozen=True, slots=True)
class ReplyCheck:
    """What a reply to a call made with a credential must be: authenticated with the agent's key and
    about the action asked (its intent digest)."""

    key_id: str
    key: bytes
    intent_digest: str

    def authenticate(self, value: bytes, headers: Headers) -> None:
        """Raise TrustError unless an ``sg-auth`` header under this key id authenticates ``value``."""
        seen = tried = 0
        for name, raw in headers or ():
            if name != AUTH_HEADER:
                continue
            seen += 1
            try:
                key_id, mac = split_authenticator(raw)
            except TrustError:
                continue
            if key_id != self.key_id or tried >= MAX_AUTHENTICATORS:
                continue
            tried += 1
            try:
                check(self.key, value, mac)
            except TrustError:
                continue
            return
        if not seen:
            raise TrustError("no authenticator")
        if not tried:
            raise TrustError(f"no authenticator under the credential's key id {self.key_id!r}")
        raise TrustError("wrong authenticator")

    def problem(self, decision: Decision, value: bytes, headers: Headers, agent_id: str) -> str | None:
        """Why the reply ``decision`` (parsed from ``value``) is not the worker's answer, or None."""
        try:
            self.authenticate(value, headers)
        except TrustError as exc:
            return str(exc)
        if decision.agent_id != agent_id:
            return f"names agent {decision.agent_id!r}, not {agent_id!r}"
        if decision.intent_digest and decision.intent_digest != self.intent_digest:
            return f"for another action (intent digest {decision.intent_digest[:12]}...)"
        return None


@dataclass
class ReplyWaiter:
    """The replies to one request, in arrival order: pending decisions first, then the final one."""

    request_id: UUID
    agent_id: str
    check: ReplyCheck | None = None
    rejected: list[str] = field(default_factory=list)
    """Why replies for this request were dropped (the first few)."""
    rejected_count: int = 0
    _queue: asyncio.Queue[Decision | BadReply] = field(default_factory=asyncio.Queue)

    def reject(self, reason: str) -> None:
        """Drop a reply that does not verify; the call keeps waiting."""
        self.rejected_count += 1
        if len(self.rejected) < MAX_REJECTED_KEPT:
            self.rejected.append(reason)

    async def next(self) -> Decision:
        """The next reply; raises ``BadReply`` for an unusable one."""
        item = await self._queue.get()
        if isinstance(item, BadReply):
            raise item
        return item

    def put(self, item: Decision | BadReply) -> None:
        self._queue.put_nowait(item)

    def delivered_final(self) -> Decision | None:
        """A final decision that arrived but was not taken yet (the call's deadline passed in the same
        instant, or while it was still publishing): the answer, rather than a timeout."""
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, Decision) and item.final:
                return item
        return None


@dataclass
class DemuxStats:
    """What the demultiplexer has seen, for tests and metrics."""

    records: Counter[int] = field(default_factory=Counter)
    delivered: int = 0
    skipped: int = 0
    unusable: int = 0
    rejected: int = 0
    """Replies to a call made with a credential that did not verify (dropped; the call kept waiting)."""


class ReplyDemux:
    """Routes decision records to the calls waiting for them, by ``request_id``."""

    def __init__(self) -> None:
        self._waiters: dict[UUID, ReplyWaiter] = {}
        self.stats = DemuxStats()

    def __len__(self) -> int:
        return len(self._waiters)

    def register(self, request_id: UUID, agent_id: str, check: ReplyCheck | None = None) -> ReplyWaiter:
        """Start waiting for ``request_id``; do this before publishing the intent. With ``check``, only
        replies that pass it are delivered."""
        if request_id in self._waiters:
            raise ValueError(f"request {request_id} is already waiting")
        waiter = ReplyWaiter(request_id, agent_id, check)
        self._waiters[request_id] = waiter
        return waiter

    def unregister(self, request_id: UUID) -> None:
        """Stop waiting (the call has its final answer, or gave up)."""
        self._waiters.pop(request_id, None)

    def fail_all(self, reason: str) -> None:
        """Answer every waiting call with an unusable reply (the gate is stopping)."""
        for waiter in self._waiters.values():
            waiter.put(BadReply(reason))

    def feed(self, partition: int, key: bytes | None, value: bytes | None, headers: Headers = ()) -> None:
        """Route one record of the decisions topic."""
        self.stats.records[partition] += 1
        try:
            decision = Decision.model_validate_json(value or b"")
        except ValidationError as exc:
            self._unparseable(value, exc)
            return
        waiter = self._waiters.get(decision.request_id)
        if waiter is None:
            self.stats.skipped += 1
            return
        if waiter.check is not None:
            problem = waiter.check.problem(decision, value or b"", headers, waiter.agent_id)
            if problem is not None:
                self._reject(waiter, problem)
                return
            self.stats.delivered += 1
            waiter.put(decision)
            return
        claimed = decision.agent_id or (key or b"").decode(errors="replace")
        if claimed != waiter.agent_id:
            self.stats.unusable += 1
            waiter.put(BadReply(f"decision names agent {claimed!r}, expected {waiter.agent_id!r}"))
            return
        self.stats.delivered += 1
        waiter.put(decision)

    def _unparseable(self, value: bytes | None, exc: ValidationError) -> None:
        self.stats.unusable += 1
        request_id = _request_id_of(value)
        waiter = self._waiters.get(request_id) if request_id is not None else None
        summary = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}"
            for e in exc.errors()[:3]
        )
        if waiter is None:
            log.warning("unparseable decision for no waiting request skipped: %s", summary)
            return
        if waiter.check is not None:
            self._reject(waiter, f"unparseable: {summary}")
            return
        waiter.put(BadReply(f"unparseable decision: {summary}"))

    def _reject(self, waiter: ReplyWaiter, reason: str) -> None:
        self.stats.rejected += 1
        waiter.reject(reason)
        log.warning("request %s (agent %s): dropped a reply that does not verify (%s); still waiting for "
                    "the worker's", waiter.request_id, waiter.agent_id, reason)


def _request_id_of(value: bytes | None) -> UUID | None:
    """The ``request_id`` of a record that failed validation, when it still has a readable one."""
    try:
        document = json.loads(value or b"")
        return UUID(str(document["request_id"])) if isinstance(document, dict) else None
    except (ValueError, KeyError, TypeError):
        return None
