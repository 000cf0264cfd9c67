"""The two deciding stages as plain objects over their tables: what the worker's consumers call
(:mod:`streams.handlers`, run by :mod:`streams.runner`).

Why two stages. Intents are keyed (and partitioned) by agent id, and a partition is processed by one
worker at a time, so everything keyed by agent (rules, risk history, ``key: agent`` limits) is decided
where it lives without coordination. A limit keyed by fleet, tool, target or role (a *shared* key) has
one state for intents from many agents, i.e. from many partitions, possibly on several workers. Its
state therefore lives on the partition of its own key, on an internal topic:

1. **Stage 1** (intents partition, table ``agent-state``) evaluates rules, risk and agent-keyed
   limits. If that is BLOCK, or no shared-key limit matches the intent, it decides right there: one
   hop, the common case. Otherwise it *forwards* the intent to the ``shared-limits`` topic keyed by
   the first shared window key.
2. **Stage 2** (``shared-limits`` partition, table ``shared-state``) evaluates the limit of that key,
   then forwards to the next shared key (keys are visited in sorted order), and the last hop combines
   everything with the engine's one combining rule and emits the decision and its audit record. It
   also sends a :class:`Feedback` back to the agent's partition (``agent-feedback`` topic, keyed and
   partitioned like intents) so stage 1 settles its own state.

Counting without double-spending or overshooting. While an intent travels, later intents must see
it counted, or two intents could both fit under a budget that holds one. So each stage *reserves*:
when the decision so far is ALLOW it counts the action at once (stage 1 its agent windows, each hop its
shared window) and remembers the reservation. If the final decision is not ALLOW, the reservations are
released (stage 1 on feedback, hops by a :class:`Release` message). In between, a reservation can only
make another intent stricter: the design fails closed. History (risk learning) is applied only once the
final ALLOW is known.

Approvals. A REQUIRE_APPROVAL is sent pending at once by whichever stage decides it, with an
:class:`ApprovalRequest` made there (the rule's approval settings, deadline = that worker's wall clock
+ timeout). Stage 1 parks the intent with its changes (``p|<request_id>``) and sends an :class:`Open`
to the approval stage (:mod:`streams.approval_stage`), which publishes the request and later answers
with a :class:`Resolved`; on an approval stage 1 then counts the agent windows and sends a
:class:`Count` to each shared-limit partition. Nothing is reserved while an approval is pending.

Idempotency. Each stage keeps a record ``d|<request_id>`` (hops: ``d|<request_id>|<key>``) in the same
table as the state it changed, written after the state, so after a crash the record implies the state.
A redelivered intent or forward replays the record: the same decision (or the same forward) is sent
again and nothing is counted twice. Records are dropped after ``retention_ms``.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from uuid import UUID

from schemas.approval import ApprovalRequest
from schemas.audit import AuditEventType, AuditRecord
from schemas.common import DecisionKind
from schemas.decision import Decision
from schemas.intent import MAX_INTENT_BYTES, Intent
from schemas.policy import Approval, duration_ms
from streams.approvals import new_request
from streams.engine import (
    AGENT_SCOPES,
    Applied,
    Change,
    CompiledPolicy,
    Evaluation,
    InMemoryState,
    LimitOutcome,
    WindowChange,
    apply,
    block_event_time,
    block_no_policy,
    combine,
    evaluate,
    evaluate_limits,
    invalid_intent,
    parse_intent,
)
from streams.records import (
    AppliedItem,
    ChangeItem,
    Count,
    Feedback,
    Forward,
    Open,
    Pending,
    Record,
    Release,
    Reservation,
    Resolved,
)
from streams.state import RECORD_PREFIX, BytesTable, TableState

PENDING_PREFIX = "p|"
DEFAULT_RETENTION_MS = 6 * 3_600_000
EVICT_PER_EVENT = 8
MAX_DEAD_LETTER_BYTES = 256 * 1024
_ALLOW, _APPROVAL, _BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK
_EMPTY = InMemoryState()


class Route(StrEnum):
    """Where an output goes."""

    DECISIONS = "decisions"
    AUDIT = "audit"
    SHARED = "shared"
    FEEDBACK = "feedback"
    DEAD_LETTER = "dead_letter"
    APPROVAL_REQUESTS = "approval_requests"
    APPROVAL_CONTROL = "approval_control"


@dataclass(frozen=True, slots=True)
class Send:
    """One message to produce."""

    route: Route
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(slots=True)
class Outcome:
    """What handling one message produced: the messages to send and the decision made (if any)."""

    sends: list[Send] = field(default_factory=list)
    decision: Decision | None = None
    duplicate: bool = False
    forwarded: bool = False


def now_ms() -> int:
    """The worker's wall clock in ms."""
    return time.time_ns() // 1_000_000


def utc(now_ms: int) -> datetime:
    """A wall-clock time in ms as an aware datetime."""
    return datetime.fromtimestamp(now_ms / 1000, UTC)


def approval_request(
    intent: Intent, decision: Decision, policy: CompiledPolicy | None, now_ms: int,
) -> ApprovalRequest:
    """The request for a REQUIRE_APPROVAL: the approval settings of the rule that required it, and a
    deadline on the worker's wall clock (``now_ms`` + timeout; intents may be stamped in the past)."""
    settings = policy.approval_for(decision.rules) if policy is not None else Approval()
    return new_request(
        intent, decision, now=utc(now_ms), approver_group=settings.group, quorum=settings.quorum,
        timeout=timedelta(milliseconds=duration_ms(settings.timeout)), channel=settings.channel,
    )


def decision_sends(
    intent: Intent | None, decision: Decision, now_ms: int, request: ApprovalRequest | None = None,
) -> tuple[Decision, list[Send]]:
    """The decision as sent (keyed by agent id) and its audit record; REQUIRE_APPROVAL goes out
    pending, with the deadline of its ``request``.

    ``decided_at`` becomes the worker's clock (``now_ms``): the engine stamps the intent's event time,
    which may be long past (a backdated intent) and would misplace the decision in the audit.
    """
    update: dict[str, object] = {"decided_at": utc(now_ms)}
    if decision.decision is _APPROVAL and decision.final:
        if request is None:
            raise ValueError(f"request {decision.request_id}: a REQUIRE_APPROVAL needs its approval request")
        update |= {"final": False, "approval_deadline_at": request.deadline_at}
    decision = decision.model_copy(update=update)
    return decision, publish_sends(intent, decision)


def publish_sends(intent: Intent | None, decision: Decision) -> list[Send]:
    """A decision as it is (keyed by agent id) and its audit record."""
    final = "final" if decision.final else "pending"
    audit = AuditRecord(
        event_id=f"{decision.request_id}:decision:{final}", event_type=AuditEventType.DECISION,
        event_time=decision.decided_at, request_id=decision.request_id, intent=intent, decision=decision,
    )
    return [
        Send(Route.DECISIONS, decision.agent_id.encode(), decision.model_dump_json().encode()),
        Send(Route.AUDIT, str(decision.request_id).encode(), audit.model_dump_json().encode()),
    ]


class Retention:
    """Per-partition FIFO of idempotency records, evicted a few at a time while handling events."""

    def __init__(self, retention_ms: int) -> None:
        self.retention_ms = retention_ms
        self.queues: dict[int, collections.deque[tuple[int, str]]] = collections.defaultdict(
            collections.deque)

    def note(self, partition: int, now_ms: int, key: str) -> None:
        self.queues[partition].append((now_ms, key))

    def adopt(self, partition: int, keys: Iterable[str], now_ms: int) -> None:
        """Queue idempotency records of a partition taken over as if written at ``now_ms``: records
        restored from a changelog, or kept from before a restart, were queued by no one and would never
        be evicted (they are evicted at most one retention late)."""
        self.queues[partition].extend((now_ms, key) for key in keys)

    def forget(self, partition: int) -> None:
        """A partition given up: its records are another worker's to evict."""
        self.queues.pop(partition, None)

    def evict(self, table: BytesTable, partition: int, now_ms: int) -> None:
        queue = self.queues.get(partition)
        for _ in range(EVICT_PER_EVENT):
            if not queue or queue[0][0] > now_ms - self.retention_ms:
                return
            table.pop(queue.popleft()[1], None)


def dead_letter(key: bytes | None, value: bytes | None, error: Exception | str) -> Send:
    """A message no stage could handle, parked on the dead-letter topic with the error as a header
    (cut to :data:`MAX_DEAD_LETTER_BYTES`, with its original size in a ``size`` header, when larger)."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    value = value or b""
    headers: tuple[tuple[str, bytes], ...] = (("error", text.encode()[:4000]),)
    if len(value) > MAX_DEAD_LETTER_BYTES:
        headers += (("size", str(len(value)).encode()),)
        value = value[:MAX_DEAD_LETTER_BYTES]
    return Send(Route.DEAD_LETTER, (key or b"")[:1024], value, headers)


def ignore_decision(decision: Decision) -> None:
    """The default hook: nothing to do."""


class AgentStage:
    """Stage 1, on the intents' partition (agent id): rules, risk, agent-keyed limits, idempotency."""

    def __init__(self, table: BytesTable, retention_ms: int = DEFAULT_RETENTION_MS,
                 max_event_skew_ms: int | None = None) -> None:
        self.table = table
        self.state = TableState(table)
        self.retention = Retention(retention_ms)
        self.max_event_skew_ms = max_event_skew_ms
        """BLOCK intents whose ``occurred_at`` is further than this from when they reached Kafka (None:
        any). The broker's append time, not the worker's clock: a backlog or a redelivery after an outage
        is judged as when it arrived, so lag never turns into skew and an answer never changes."""
        self.on_approved: Callable[[Decision], None] = ignore_decision
        """Called once per approved action, when its final ALLOW is recorded (the metrics' hook)."""

    def _record(self, request_id: UUID) -> Record | None:
        raw = self.table.get(f"{RECORD_PREFIX}{request_id}")
        return None if raw is None else Record.model_validate_json(raw)

    def _write(
        self, request_id: UUID, record: Record | bytes, partition: int, now_ms: int, new: bool,
    ) -> None:
        key = f"{RECORD_PREFIX}{request_id}"
        self.table[key] = record if isinstance(record, bytes) else record.model_dump_json().encode()
        if new:
            self.retention.note(partition, now_ms, key)

    def handle_intent(
        self, raw: bytes, key: bytes | None, policy: CompiledPolicy | None, partition: int, now_ms: int,
        appended_ms: int | None = None,
    ) -> Outcome:
        """Decide one raw intent (or answer a redelivery from its record). Never raises.

        ``now_ms`` is the worker's clock (``decided_at``, approval deadlines); ``appended_ms`` the intent
        record's Kafka timestamp (``now_ms`` when unknown)."""
        self.retention.evict(self.table, partition, now_ms)
        if len(raw) > MAX_INTENT_BYTES:
            too_large = ValueError(f"the intent is {len(raw)} bytes; the limit is {MAX_INTENT_BYTES}")
            return self._invalid(raw, key, too_large, policy, now_ms)
        try:
            intent = parse_intent(raw)
        except Exception as exc:
            return self._invalid(raw, key, exc, policy, now_ms)
        record = self._record(intent.request_id)
        if record is not None:
            return self._replay(intent, record)
        if policy is None:
            return self._settle(intent, block_no_policy(intent), (), None, partition, now_ms)
        skew_ms = intent.occurred_at_ms - (now_ms if appended_ms is None else appended_ms)
        if self.max_event_skew_ms is not None and abs(skew_ms) > self.max_event_skew_ms:
            blocked = block_event_time(intent, policy, skew_ms, self.max_event_skew_ms)
            return self._settle(intent, blocked, (), None, partition, now_ms)
        evaluation = evaluate(policy, self.state, intent, AGENT_SCOPES)
        if policy.has_fleet_limits and evaluation.decision.decision is not _BLOCK:
            static = evaluate_limits(policy, _EMPTY, intent)
            counted = {change.limit_id for change in static.changes}
            errors = tuple(entry for entry in static.applied if entry.id not in counted)
            if errors:  # a shared limit that cannot be evaluated never grants: BLOCK here
                evaluation = combine(policy, evaluation, LimitOutcome(errors, ()), intent)
            elif static.changes:
                return self._forward(intent, evaluation, static.changes, partition, now_ms)
        return self._settle(intent, evaluation.decision, evaluation.changes, policy, partition, now_ms)

    def _invalid(
        self, raw: bytes, key: bytes | None, exc: Exception, policy: CompiledPolicy | None, now_ms: int,
    ) -> Outcome:
        decision = invalid_intent(raw, exc, policy.version if policy else "")
        if decision.request_id.int == 0:  # no request id to answer to
            return Outcome([dead_letter(key, raw, decision.reasons[0])])
        if not decision.agent_id and key:
            decision = decision.model_copy(update={"agent_id": key.decode("utf-8", "replace")[:256]})
        sent, sends = decision_sends(None, decision, now_ms)
        return Outcome(sends, sent)

    def _replay(self, intent: Intent, record: Record) -> Outcome:
        if record.decision is not None:
            body = record.decision.model_dump_json().encode()
            sends = [Send(Route.DECISIONS, intent.agent_id.encode(), body), *self._reopen(record.decision)]
            return Outcome(sends, record.decision, True)
        assert record.forward is not None
        return Outcome([_forward_send(record.forward)], None, True, True)

    def _reopen(self, decision: Decision) -> list[Send]:
        """The Open of a still pending approval again (a redelivery may follow a crash before it was
        sent; the approval stage ignores an Open it has seen)."""
        if decision.final or decision.decision is not _APPROVAL:
            return []
        raw = self.table.get(f"{PENDING_PREFIX}{decision.request_id}")
        return [] if raw is None else [_open_send(Pending.model_validate_json(raw))]

    def _forward(
        self, intent: Intent, evaluation: Evaluation, shared: tuple[WindowChange, ...], partition: int,
        now_ms: int,
    ) -> Outcome:
        keys = sorted({change.key for change in shared})
        reserve = evaluation.decision.decision is _ALLOW
        reserved: list[Reservation] = []
        if reserve:
            windows = [c for c in evaluation.changes if isinstance(c, WindowChange)]
            for change in windows:
                self.state.add_once(change, intent.request_id)
            reserved = [Reservation(key=c.key, at_ms=c.at_ms, value=c.value) for c in windows]
        forward = Forward(
            intent=intent, stage1=evaluation.decision, decided_ms=now_ms,
            applied=tuple(AppliedItem.of(entry) for entry in evaluation.applied),
            keys=tuple(keys), reserve=reserve,
        )
        changes = tuple(ChangeItem.of(change) for change in evaluation.changes)
        record = Record(changes=changes, shared=tuple(ChangeItem.of(change) for change in shared),
                        forward=forward, reserved=tuple(reserved))
        self._write(intent.request_id, record, partition, now_ms, new=True)
        return Outcome([_forward_send(forward)], None, False, True)

    def _settle(
        self, intent: Intent, decision: Decision, changes: tuple[Change, ...],
        policy: CompiledPolicy | None, partition: int, now_ms: int,
    ) -> Outcome:
        """Stage 1 decides alone: count an ALLOW, park a REQUIRE_APPROVAL, record, send."""
        if decision.decision is _ALLOW:
            _count(self.state, changes, intent.request_id)
        request = _request_of(intent, decision, policy, now_ms)
        sent, sends = decision_sends(intent, decision, now_ms, request)
        if request is not None:
            items = tuple(ChangeItem.of(change) for change in changes)
            sends.append(self._park(Pending(intent=intent, decision=sent, request=request, changes=items)))
        self._write(intent.request_id, _decided(sends[0].value), partition, now_ms, new=True)
        return Outcome(sends, sent)

    def _park(self, pending: Pending) -> Send:
        """Keep a pending approval's intent and changes here; the Open to send to the approval stage."""
        self.table[f"{PENDING_PREFIX}{pending.intent.request_id}"] = pending.model_dump_json().encode()
        return _open_send(pending)

    def handle_feedback(self, feedback: Feedback, partition: int, now_ms: int) -> list[Send]:
        """Settle a forwarded intent: keep or release the reservation, learn history, park approvals.

        Returns the Open of an approval (again, for a redelivered feedback of a pending one).
        """
        request_id = feedback.intent.request_id
        record = self._record(request_id)
        if record is None:
            return []  # unknown (expired)
        if record.decision is not None:
            return self._reopen(record.decision)  # already settled: a redelivery changes nothing
        kind = feedback.decision.decision
        if kind is _APPROVAL and feedback.request is None:
            raise ValueError(f"request {request_id}: a REQUIRE_APPROVAL feedback without its request")
        if kind is _ALLOW:
            apply(self.state, [c.to_change() for c in record.changes if c.kind == "history"])
        else:
            for reservation in record.reserved:
                self.state.release(reservation.key, reservation.at_ms, reservation.value, request_id)
        sends: list[Send] = []
        if feedback.request is not None and kind is _APPROVAL:
            sends.append(self._park(Pending(
                intent=feedback.intent, decision=feedback.decision, request=feedback.request,
                changes=record.changes, shared=record.shared,
            )))
        self._write(request_id, Record(decision=feedback.decision), partition, now_ms, new=False)
        return sends

    def handle_resolved(self, resolved: Resolved, partition: int, now_ms: int) -> list[Send]:
        """The final decision of a parked approval: record it (a redelivered intent gets it) and, when
        approved, count the action (agent windows and history here, shared windows by a chain of
        :class:`Count` hops) before the ALLOW goes out: from here, or from the chain's last hop. A
        denied or expired one was already sent by the approval stage and counts nothing.

        Idempotent: a redelivery finds the final decision recorded and re-sends what follows from it
        (each window counts a request once).
        """
        request_id = resolved.decision.request_id
        pending_key = f"{PENDING_PREFIX}{request_id}"
        raw = self.table.get(pending_key)
        if raw is None:
            return []  # never parked here, or settled long ago
        pending = Pending.model_validate_json(raw)
        approved = resolved.decision.decision is _ALLOW
        record = self._record(request_id)
        if record is None or record.decision is None or not record.decision.final:
            if approved:
                _count(self.state, tuple(c.to_change() for c in pending.changes), request_id)
                self.on_approved(resolved.decision)
            self._write(request_id, Record(decision=resolved.decision), partition, now_ms, new=record is None)
            self.retention.note(partition, now_ms, pending_key)
        if not approved:
            return []
        if not pending.shared:
            return publish_sends(pending.intent, resolved.decision)
        count = Count(request_id=request_id, changes=_by_key(pending.shared), decision=resolved.decision,
                      intent=pending.intent)
        return [_count_send(count)]


class SharedStage:
    """Stage 2, on the ``shared-limits`` partition of one shared window key."""

    def __init__(self, table: BytesTable, retention_ms: int = DEFAULT_RETENTION_MS) -> None:
        self.table = table
        self.state = TableState(table)
        self.retention = Retention(retention_ms)

    def handle_forward(
        self, forward: Forward, policy: CompiledPolicy | None, partition: int, now_ms: int,
    ) -> Outcome:
        """Check this hop's limit (or replay it), then forward to the next key or decide."""
        self.retention.evict(self.table, partition, now_ms)
        key = forward.keys[0]
        record_key = f"{RECORD_PREFIX}{forward.intent.request_id}|{key}"
        raw = self.table.get(record_key)
        duplicate = raw is not None
        if raw is not None:
            record = Record.model_validate_json(raw)
        else:
            record = self._check(forward, key, policy)
            self.table[record_key] = record.model_dump_json().encode()
            self.retention.note(partition, now_ms, record_key)
        hits = (*forward.hits, *record.hits)
        reserved = (*forward.reserved, *record.reserved)
        reserve = forward.reserve and all(hit.decision is _ALLOW for hit in hits)
        if len(forward.keys) > 1:
            nxt = forward.model_copy(update={
                "keys": forward.keys[1:], "hits": hits, "reserved": reserved, "reserve": reserve,
            })
            return Outcome([_forward_send(nxt)], None, duplicate, True)
        return self._decide(forward, policy, hits, reserved, duplicate)

    def _check(self, forward: Forward, key: str, policy: CompiledPolicy | None) -> Record:
        if policy is None:
            reason = f"policy_unavailable: version {forward.stage1.policy_version} is no longer known"
            return Record(hits=(AppliedItem(order=1 << 30, id="policy", decision=_BLOCK, reason=reason),))
        outcome = evaluate_limits(policy, self.state, forward.intent)
        mine = [change for change in outcome.changes if change.key == key]
        ids = {change.limit_id for change in mine}
        hits = tuple(AppliedItem.of(entry) for entry in outcome.applied if entry.id in ids)
        reserved: tuple[Reservation, ...] = ()
        if forward.reserve and all(h.decision is _ALLOW for h in (*forward.hits, *hits)):
            for change in mine:
                self.state.add_once(change, forward.intent.request_id)
            reserved = tuple(Reservation(key=c.key, at_ms=c.at_ms, value=c.value) for c in mine)
        return Record(hits=hits, reserved=reserved)

    def _decide(
        self, forward: Forward, policy: CompiledPolicy | None, hits: tuple[AppliedItem, ...],
        reserved: tuple[Reservation, ...], duplicate: bool,
    ) -> Outcome:
        if policy is None:
            reasons = (*forward.stage1.reasons, *(hit.reason for hit in hits))
            decision = forward.stage1.model_copy(update={"decision": _BLOCK, "reasons": reasons})
        else:
            decision = _combined(policy, forward, hits)
        intent = forward.intent
        request = _request_of(intent, decision, policy, forward.decided_ms)
        sent, sends = decision_sends(intent, decision, forward.decided_ms, request)
        if sent.decision is not _ALLOW and not duplicate:
            sends.extend(self._release(intent.request_id, reserved))
        feedback = Feedback(intent=intent, decision=sent, request=request)
        sends.append(Send(Route.FEEDBACK, intent.agent_id.encode(), feedback.model_dump_json().encode()))
        return Outcome(sends, sent, duplicate)

    def _release(self, request_id: UUID, reserved: tuple[Reservation, ...]) -> list[Send]:
        return [
            Send(Route.SHARED, r.key.encode(),
                 Release(request_id=request_id, reservation=r).model_dump_json().encode())
            for r in reserved
        ]

    def handle_release(self, release: Release, partition: int, now_ms: int) -> None:
        """Undo one reservation, once."""
        marker = f"{RECORD_PREFIX}{release.request_id}|{release.reservation.key}|released"
        if marker in self.table:
            return
        r = release.reservation
        self.state.release(r.key, r.at_ms, r.value, release.request_id)
        self.table[marker] = b"1"
        self.retention.note(partition, now_ms, marker)

    def handle_count(self, count: Count, partition: int, now_ms: int) -> list[Send]:
        """Count an approved action on this hop's windows (once per request: see :mod:`streams.state`),
        then pass the rest on; the last hop sends the final ALLOW."""
        self.retention.evict(self.table, partition, now_ms)
        key = count.changes[0].key
        for item in count.changes:
            change = item.to_change()
            if item.key == key and isinstance(change, WindowChange):
                self.state.add_once(change, count.request_id)
        rest = tuple(item for item in count.changes if item.key != key)
        if rest:
            return [_count_send(count.model_copy(update={"changes": rest}))]
        return publish_sends(count.intent, count.decision)


def _count(state: TableState, changes: tuple[Change, ...], request_id: UUID) -> None:
    """Apply an ALLOW's changes: windows once per request (see :mod:`streams.state`), then history."""
    for change in changes:
        if isinstance(change, WindowChange):
            state.add_once(change, request_id)
    apply(state, [change for change in changes if not isinstance(change, WindowChange)])


def _decided(body: bytes) -> bytes:
    """The JSON of ``Record(decision=...)`` around the decision's JSON as sent (serialised once)."""
    return b'{"decision":' + body + b"}"


def _by_key(items: tuple[ChangeItem, ...]) -> tuple[ChangeItem, ...]:
    """Changes in the order their hops visit them (sorted keys, as forwards do)."""
    return tuple(sorted(items, key=lambda item: item.key))


def _count_send(count: Count) -> Send:
    return Send(Route.SHARED, count.changes[0].key.encode(), count.model_dump_json().encode())


def _forward_send(forward: Forward) -> Send:
    return Send(Route.SHARED, forward.keys[0].encode(), forward.model_dump_json().encode())


def _request_of(
    intent: Intent, decision: Decision, policy: CompiledPolicy | None, now_ms: int,
) -> ApprovalRequest | None:
    return approval_request(intent, decision, policy, now_ms) if decision.decision is _APPROVAL else None


def _open_send(pending: Pending) -> Send:
    body = Open(request=pending.request, policy_name=pending.decision.policy_name).model_dump_json().encode()
    return Send(Route.APPROVAL_CONTROL, str(pending.request.request_id).encode(), body)


def _applied(items: tuple[AppliedItem, ...]) -> list[Applied]:
    return [item.to_applied() for item in items]


def _combined(policy: CompiledPolicy, forward: Forward, hits: tuple[AppliedItem, ...]) -> Decision:
    stage1 = Evaluation(forward.stage1, (), tuple(_applied(forward.applied)))
    return combine(policy, stage1, LimitOutcome(tuple(_applied(hits)), ()), forward.intent).decision


__all__ = [
    "AgentStage", "Outcome", "Retention", "Route", "Send", "SharedStage", "approval_request", "dead_letter",
    "decision_sends", "now_ms", "publish_sends", "utc",
]
