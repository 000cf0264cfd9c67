"""The two deciding stages as plain objects over their tables: what the worker's consumers call
(:mod:`streams.handlers`, run by :mod:`streams.runtime.runner`).

Why two stages. Intents are keyed (and partitioned) by agent id, and a partition is processed by one
worker at a time, so everything keyed by agent (rules, risk history, ``key: agent`` limits) is decided
where it lives without coordination. A limit keyed by fleet, tool, target or role (a *shared* key) has
one state for intents from many agents, i.e. from many partitions, possibly on several workers. Its
state therefore lives on the partition of its own key, on an internal topic:

1. **The decide stage** (intents partition, table ``agent-state``) evaluates rules, risk and
   agent-keyed limits. If that is BLOCK, or no shared-key limit matches the intent, it decides right
   there: one hop, the common case. Otherwise it *forwards* the intent to the ``shared-limits`` topic
   keyed by the first shared window key.
2. **The shared stage** (``shared-limits`` partition, table ``shared-state``) evaluates the limit of
   that key, then forwards to the next shared key (keys are visited in sorted order), and the last hop
   combines everything with the engine's one combining rule and emits the decision and its audit
   record. It also sends a :class:`Feedback` back to the agent's partition (``agent-feedback`` topic,
   keyed and partitioned like intents) so the decide stage settles its own state.

Counting without double-spending or overshooting. While an intent travels, later intents must see
it counted, or two intents could both fit under a budget that holds one. So each stage *reserves*:
when the decision so far is ALLOW it counts the action at once (the decide stage its agent windows,
each hop its shared window) and remembers the reservation. If the final decision is not ALLOW, the
reservations are released (the decide stage on feedback, hops by a :class:`Release` message). In
between, a reservation can only make another intent stricter: the design fails closed. History
(risk learning) is applied only once the final ALLOW is known.

Approvals. A REQUIRE_APPROVAL is sent pending at once by whichever stage decides it, with an
:class:`ApprovalRequest` made there (the rule's approval settings, deadline = that worker's wall clock
+ timeout). The decide stage parks the intent with its changes (``p|<request_id>``) and sends an :class:`Open`
to the approval stage (:mod:`streams.stages.approval`), which publishes the request and later answers
with a :class:`Resolved`; on an approval the decide stage then counts the agent windows and sends a
:class:`Count` to each shared-limit partition. Nothing is reserved while an approval is pending.

Leases (:mod:`streams.stages.leases`, docs/leases.md). The owner of a shared key lends each deciding
partition a slice of its budget over a span of event time; an ALLOW whose every shared limit a lease
covers is decided here, with no hop, and its use is reported when the lease is returned. An intent no
lease covers takes the hops above.

Idempotency. Each stage keeps a record ``d|<request_id>`` (hops: ``d|<request_id>|<key>``) in the same
table as the state it changed, written after the state, so after a crash the record implies the state.
A redelivered intent or forward replays the record: the same decision (or the same forward) is sent
again and nothing is counted twice. Records are dropped after ``retention_ms``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import replace
from uuid import UUID, uuid4

from schemas.common import DecisionKind
from schemas.decision import REQUEST_ID_REUSED, WAIT_EXPIRED, Decision
from schemas.intent import Intent, canonical_json
from streams.engine import (
    AGENT_SCOPES,
    Change,
    CompiledPolicy,
    Context,
    Result,
    TrailChange,
    WindowChange,
    apply,
    evaluate_raw,
)
from streams.messages import (
    AppliedItem,
    ChangeItem,
    Count,
    Feedback,
    Forward,
    LeaseAsk,
    LeaseGrant,
    LeaseReturn,
    Pending,
    Receipt,
    Reservation,
    Resolved,
)
from streams.stages.leases import (
    MAX_WAIT_MS,
    Held,
    HeldKey,
    HolderLeases,
    leasable,
    need_of,
    span_of,
)
from streams.stages.outputs import (
    Outcome,
    Route,
    Send,
    answer_send,
    approval_final_sends,
    count_send,
    dead_letter,
    decision_sends,
    forward_send,
    ignore_decision,
    open_send,
    publish_sends,
    request_of,
    security_send,
    stopped_waiting,
    wait_expired,
)
from streams.stages.retention import DEFAULT_RETENTION_MS, Retention
from streams.stages.shadow import Shadow
from streams.state.table_state import RECEIPT_PREFIX, BytesTable, TableState, keys_with_prefix

Admit = Callable[[Intent], tuple[str, str] | None]
"""The worker's check of a parsed intent (:meth:`streams.runtime.trust.WorkerTrust.admit`)."""
PENDING_PREFIX = "p|"
UNSENT_PREFIX = "ow|"
"""A waiting intent settled by a lease's answer or the tick, until the producer flushed what that sent:
a worker that dies first leaves the marker, and the next owner sends it again (no input redelivers it)."""
_ALLOW, _APPROVAL, _BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK


class DecideStage:
    """On the intents' partition (agent id): rules, risk, agent-keyed limits, idempotency."""

    def __init__(self, table: BytesTable, retention_ms: int = DEFAULT_RETENTION_MS,
                 max_event_skew_ms: int | None = None, partitions: int = 0) -> None:
        self.table = table
        self.state = TableState(table)
        self.retention = Retention(retention_ms)
        self.max_event_skew_ms = max_event_skew_ms
        """BLOCK intents whose ``occurred_at`` is further than this from when they reached Kafka (None:
        any). The broker's append time, not the worker's clock: a backlog or a redelivery after an outage
        is judged as when it arrived, so lag never turns into skew and an answer never changes."""
        self.on_approved: Callable[[Decision], None] = ignore_decision
        """Called once per approved action, when its final ALLOW is recorded (the metrics' hook)."""
        self.shadow = Shadow(table, max_event_skew_ms)
        """Decides with a shadow policy, when one is published (:mod:`streams.stages.shadow`)."""
        self.partitions = partitions
        """How many partitions decide, each of which may hold a lease on a shared key (docs/leases.md);
        0: this stage asks for none, every shared limit takes the hops."""
        self.leases = HolderLeases(table)
        self._unsent: dict[int, list[UUID]] = {}
        """Per partition: settled waiting intents whose marker goes once the producer flushed."""

    def _receipt(self, request_id: UUID) -> Receipt | None:
        raw = self.table.get(f"{RECEIPT_PREFIX}{request_id}")
        return None if raw is None else Receipt.model_validate_json(raw)

    def _write(
        self, request_id: UUID, record: Receipt | bytes, partition: int, now_ms: int, new: bool,
    ) -> None:
        key = f"{RECEIPT_PREFIX}{request_id}"
        self.table[key] = record if isinstance(record, bytes) else record.model_dump_json().encode()
        if new:
            self.retention.note(partition, now_ms, key)

    def handle_intent(
        self, raw: bytes, key: bytes | None, policy: CompiledPolicy | None, partition: int, now_ms: int,
        appended_ms: int | None = None, admit: Admit | None = None, shadow: CompiledPolicy | None = None,
    ) -> Outcome:
        """Decide one raw intent (or answer a redelivery from its receipt). Never raises.

        ``now_ms`` is the worker's clock (``decided_at``, approval deadlines); ``appended_ms`` the intent
        record's Kafka timestamp (``now_ms`` when unknown); ``admit`` the worker's check of credentials
        and partition. A request id already decided for other bytes is refused (``request_id_reused``).
        The engine decides; this routes its result. A refused intent is answered and audited as a
        security event, and changes nothing here: no receipt, no count. With a ``shadow`` policy, a first
        delivery is also decided by it (audited, never enforced)."""
        self.retention.evict(self.table, partition, now_ms)
        found: list[Receipt | None] = []

        def checks(intent: Intent) -> tuple[str, str] | None:
            refusal = admit(intent) if admit is not None else None
            if refusal is not None:
                return refusal
            receipt = self._receipt(intent.request_id)
            if receipt is not None and not _same_request(receipt.fingerprint, intent, raw):
                return REQUEST_ID_REUSED, f"{intent.request_id} was already decided for another action"
            found.append(receipt)
            return None

        context = Context(now_ms, appended_ms, self.max_event_skew_ms, AGENT_SCOPES, key, checks)
        result = evaluate_raw(policy, self.state, raw, context)
        intent = result.intent
        if intent is None:
            return self._invalid(raw, key, result.decision)
        if result.refused:
            sent, sends = decision_sends(intent, result.decision)
            if sent.determining[0] != REQUEST_ID_REUSED:  # its sender is not known to be the agent:
                sends[0] = replace(sends[0], agent=None)  # unsealed, which the agent's SDK drops
            return Outcome([*sends, security_send(intent, sent)], sent)
        receipt = found[0] if found else self._receipt(intent.request_id)
        if receipt is not None:
            return self._replay(intent, receipt, partition, now_ms)
        fingerprint = request_fingerprint(intent)
        # the shadow's state is written before the receipt, which then implies it after a crash
        judged = self.shadow.judge(shadow, intent, now_ms, appended_ms) if shadow is not None else None
        if result.shared:
            spent: dict[str, HeldKey] = {}
            leased = self._leased(intent, result, policy, partition, now_ms, fingerprint, spent)
            asks = self._asks(intent, result, policy, partition, now_ms, spent)
            outcome = leased or self._wait(intent, result, policy, partition, now_ms, fingerprint) or \
                self._forward(intent, result, partition, now_ms, fingerprint)
            outcome.sends.extend(asks)
        else:
            outcome = self._settle(intent, result.decision, result.changes, policy, partition, now_ms,
                                   fingerprint)
        if judged is not None:
            outcome.sends.append(judged)
        return outcome

    def _invalid(self, raw: bytes, key: bytes | None, decision: Decision) -> Outcome:
        if decision.request_id.int == 0:  # no request id to answer to
            return Outcome([dead_letter(key, raw, decision.reasons[0])])
        sent, sends = decision_sends(None, decision)
        return Outcome(sends, sent)

    def _replay(self, intent: Intent, record: Receipt, partition: int, now_ms: int) -> Outcome:
        if record.count is not None:  # its ALLOW is the last hop's to send, once the fleet windows count it
            return Outcome([count_send(record.count)], None, True, True)
        if record.decision is not None:
            body = record.decision.model_dump_json().encode()
            answer = answer_send(intent, record.decision, body)
            sends = [answer, *self._reopen(record.decision)]
            return Outcome(sends, record.decision, True)
        assert record.forward is not None
        if record.waiting:  # its ask may be lost with the crash that redelivers it: the hops decide it
            return Outcome([self._send_on(intent.request_id, record, partition, now_ms)], None, True, True)
        return Outcome([forward_send(record.forward)], None, True, True)

    def _reopen(self, decision: Decision) -> list[Send]:
        """The Open of a still pending approval again (a redelivery may follow a crash before it was
        sent; the approval stage ignores an Open it has seen)."""
        if decision.final or decision.decision is not _APPROVAL:
            return []
        raw = self.table.get(f"{PENDING_PREFIX}{decision.request_id}")
        return [] if raw is None else [open_send(Pending.model_validate_json(raw))]

    def _forward(
        self, intent: Intent, result: Result, partition: int, now_ms: int, fingerprint: str,
    ) -> Outcome:
        record = self._hold(intent, result, partition, now_ms, fingerprint, waiting=False)
        assert record.forward is not None
        return Outcome([forward_send(record.forward)], None, False, True)

    def _hold(
        self, intent: Intent, result: Result, partition: int, now_ms: int, fingerprint: str, waiting: bool,
    ) -> Receipt:
        """Reserve an intent's agent windows and hold its trails until its shared limits are settled
        (by the hops, or by a lease it waits for); record its forward."""
        keys = sorted({change.key for change in result.shared})
        reserve = result.decision.decision is _ALLOW
        reserved: list[Reservation] = []
        if reserve:
            windows = [c for c in result.changes if isinstance(c, WindowChange)]
            for change in windows:
                self.state.add_once(change, intent.request_id)
            reserved = [Reservation(key=c.key, at_ms=c.at_ms, value=c.value) for c in windows]
            for trail in _trails(result.changes):  # held until the final decision comes back
                if _ALLOW in trail.counts:
                    self.state.hold_trail(trail.key, trail.at_ms, intent.request_id, trail.within_ms)
        forward = Forward(
            intent=intent, stage1=result.decision, decided_ms=now_ms,
            applied=tuple(AppliedItem.of(entry) for entry in result.applied),
            keys=tuple(keys), reserve=reserve,
        )
        changes = tuple(ChangeItem.of(change) for change in result.changes)
        record = Receipt(changes=changes, shared=tuple(ChangeItem.of(change) for change in result.shared),
                         forward=forward, reserved=tuple(reserved), fingerprint=fingerprint, waiting=waiting)
        self._write(intent.request_id, record, partition, now_ms, new=True)
        return record

    def _wait(
        self, intent: Intent, result: Result, policy: CompiledPolicy | None, partition: int, now_ms: int,
        fingerprint: str,
    ) -> Outcome | None:
        """Hold an ALLOW so far whose shared limits are each covered by a lease or asked for one: it waits
        for the answer (one ask for all such intents, where each would take two hops), and is decided
        here if the lease covers it. None: some limit is neither, so the intent takes the hops."""
        if policy is None or result.decision.decision is not _ALLOW or not self.partitions:
            return None
        waits_on = None
        for change in result.shared:
            if self.leases.find(change, policy.version) is not None:
                continue
            held = self.leases.held(change.key)
            if not self.leases.asking(held, now_ms):
                return None
            waits_on = waits_on or (change.key, held)
        if waits_on is None:
            return None
        self._hold(intent, result, partition, now_ms, fingerprint, waiting=True)
        self.leases.wait(waits_on[0], intent.request_id, 1, waits_on[1])
        return Outcome(waiting=True)

    def _send_on(self, request_id: UUID, record: Receipt, partition: int, now_ms: int) -> Send:
        """A waiting intent takes the hops after all: its forward, recorded as sent."""
        assert record.forward is not None
        self._write(request_id, record.model_copy(update={"waiting": False}), partition, now_ms, new=False)
        return forward_send(record.forward)

    def _leased(
        self, intent: Intent, result: Result, policy: CompiledPolicy | None, partition: int, now_ms: int,
        fingerprint: str, spent: dict[str, HeldKey],
    ) -> Outcome | None:
        """Decide here an ALLOW whose every shared limit a lease covers (docs/leases.md), noting each
        key's lease state after in ``spent``; None: no lease covers them all, so the intent takes the
        shared hops."""
        if policy is None or result.decision.decision is not _ALLOW:
            return None
        found = []
        for change in result.shared:
            hit = self.leases.find(change, policy.version)
            if hit is None:
                return None
            found.append((change, *hit))
        for change, held, index in found:
            spent[change.key] = self.leases.spend(change, held, index)
        outcome = self._settle(intent, result.decision, result.changes, policy, partition, now_ms,
                               fingerprint)
        outcome.leased = True
        return outcome

    def _asks(
        self, intent: Intent, result: Result, policy: CompiledPolicy | None, partition: int, now_ms: int,
        spent: dict[str, HeldKey],
    ) -> list[Send]:
        """On an ALLOW's shared keys: return the leases due, and ask the owners for a lease where none
        lasts and none is asked (``spent``: the lease state of the keys just spent on, else read)."""
        if policy is None or result.decision.decision is not _ALLOW or not self.partitions:
            return []
        sends = []
        budgets = _budgets(policy)
        for change in result.shared:
            held = spent.get(change.key) or self.leases.held(change.key)
            if self.leases.any_due(held, now_ms):  # here too: the tick waits for a caught-up partition
                sends += self._returns(change.key, partition, now_ms)
                held = self.leases.held(change.key)
            if not leasable(change, budgets.get(change.limit_id, 0.0), self.partitions):
                continue
            due = self.leases.ask_due(change, now_ms, held)
            if due is None:
                continue
            want, held = due
            sends.append(self._ask(change, policy.version, partition, intent.agent_id, want, held, now_ms))
        return sends

    def _ask(self, change: WindowChange, policy_version: str, partition: int, reply_key: str, want: float,
             held: HeldKey, now_ms: int) -> Send:
        """Ask the owner of ``change``'s key for a lease around the change, and note the ask open."""
        start_ms, end_ms = span_of(change.at_ms, change.window_ms)
        ask = LeaseAsk(
            ask_id=uuid4(), key=change.key, limit_id=change.limit_id, policy_version=policy_version,
            partition=partition, partitions=self.partitions, reply_key=reply_key,
            start_ms=start_ms, end_ms=end_ms, want=want, need=need_of(change) or 0.0,
        )
        self.leases.asked(change.key, held, ask.ask_id, now_ms)
        return Send(Route.SHARED, change.key.encode(), ask.model_dump_json().encode())

    def handle_grant(self, grant: LeaseGrant, partition: int, now_ms: int) -> list[Outcome]:
        """Hold a lease asked for here, and settle the intents that waited for the answer: decided here
        when leases cover them, else asked for once more (a lease too small for them all) or sent on
        the hops. A grant nobody here asked for (an ask given up, or not this partition's) is returned
        unused at once, unless it is a lease held or returned already."""
        if grant.partition != partition:
            return []
        lease = None if not grant.amount else Held(
            lease_id=grant.ask_id, policy_version=grant.policy_version, start_ms=grant.start_ms,
            end_ms=grant.end_ms, amount=grant.amount, held_ms=now_ms)
        if self.leases.granted(grant.key, grant.ask_id, lease):
            return self._settle_waiting(grant.key, partition, now_ms, again=lease is not None)
        if lease is None or self.leases.knows(grant.key, grant.ask_id):
            return []
        back = LeaseReturn(lease_id=grant.ask_id, key=grant.key, partition=partition)
        return [Outcome([Send(Route.SHARED, grant.key.encode(), back.model_dump_json().encode())])]

    def _settle_waiting(self, key: str, partition: int, now_ms: int, again: bool) -> list[Outcome]:
        """The intents waiting on ``key``'s ask, once it is answered (``again``: with a lease, so those it
        does not cover may wait for one more ask, once)."""
        outcomes: list[Outcome] = []
        short: list[tuple[UUID, Receipt, WindowChange]] = []
        for request_id, asks in self.leases.waiting_on(key):  # listed until all are settled: see below
            record = self._receipt(request_id)
            if record is None or not record.waiting or record.forward is None:
                continue  # sent on the hops meanwhile (redelivered), settled before a crash, or evicted
            self._unsent.setdefault(partition, []).append(request_id)
            self.table[f"{UNSENT_PREFIX}{request_id}"] = b"1"  # until the producer flushed what follows
            if stopped_waiting(record.forward.intent, now_ms):
                outcomes.append(self._expire_waited(request_id, record, partition, now_ms))
                continue
            version = record.forward.stage1.policy_version
            changes = [item.to_change() for item in record.shared]
            windows = [change for change in changes if isinstance(change, WindowChange)]
            missing = [change for change in windows if self.leases.find(change, version) is None]
            if not missing:
                outcomes.append(self._decide_waited(request_id, record, windows, partition, now_ms))
                continue
            held = self.leases.held(missing[0].key)
            if missing[0].key != key and self.leases.asking(held, now_ms):
                self.leases.wait(missing[0].key, request_id, asks, held)
            elif again and asks == 1 and missing[0].key == key:
                short.append((request_id, record, missing[0]))
            else:
                sent_on = self._send_on(request_id, record, partition, now_ms)
                outcomes.append(Outcome([sent_on], forwarded=True))
        # Written after every intent's settlement: the changelog may keep any prefix of these writes (a
        # crash), and an intent still listed is settled by the next answer or tick, never forgotten.
        self.leases.relist(key, [(request_id, 2) for request_id, _, _ in short])
        if short:
            outcomes.append(self._ask_again(key, short, partition, now_ms))
        return outcomes

    def _decide_waited(
        self, request_id: UUID, record: Receipt, windows: list[WindowChange], partition: int, now_ms: int,
    ) -> Outcome:
        """A waiting intent the leases now cover: spend them, settle it as an ALLOW, send its decision."""
        assert record.forward is not None
        for change in windows:
            hit = self.leases.find(change, record.forward.stage1.policy_version)
            assert hit is not None
            self.leases.spend(change, *hit)
        self._release_held(request_id, record, _ALLOW)
        outcome = self._answer_waited(request_id, record, record.forward.stage1, partition, now_ms)
        outcome.leased = True
        return outcome

    def _expire_waited(self, request_id: UUID, record: Receipt, partition: int, now_ms: int) -> Outcome:
        """A waiting intent whose agent stopped waiting (``wait_until``) before the answer came: BLOCK it
        ``wait_expired``, as if it had arrived then, and undo its reservations; nothing contradicts what
        the agent was told."""
        assert record.forward is not None
        self._release_held(request_id, record, None)
        decision = wait_expired(record.forward.intent, record.forward.stage1, now_ms)
        return self._answer_waited(request_id, record, decision, partition, now_ms)

    def _answer_waited(self, request_id: UUID, record: Receipt, decision: Decision, partition: int,
                       now_ms: int) -> Outcome:
        """Send a waiting intent's decision, recorded with its intent (:meth:`unsent` may send it again)."""
        assert record.forward is not None
        sent, sends = decision_sends(record.forward.intent, decision)
        self._write(request_id, _settled(record, sent), partition, now_ms, new=False)
        return Outcome(sends, sent, record_ms=record.forward.decided_ms)

    def _release_held(self, request_id: UUID, record: Receipt, kind: DecisionKind | None) -> None:
        """Settle what an intent held while its shared limits were decided (its trails, its reserved
        agent windows): an ALLOW keeps the reservations and learns its trails and history; anything else
        undoes them, its trails counting it as ``kind`` (None: nowhere, as for an intent whose agent
        stopped waiting, which counts nothing)."""
        trails = [c.to_change() for c in record.changes if c.kind == "trail"]
        for trail in trails:
            self.state.release_trail(trail.key, request_id)
        if kind is _ALLOW:
            apply(self.state, [*trails, *(c.to_change() for c in record.changes if c.kind == "history")])
            return
        if kind is not None:
            apply(self.state, trails, kind)
        for reservation in record.reserved:
            self.state.release(reservation.key, reservation.at_ms, reservation.value, request_id)

    def _ask_again(self, key: str, short: list[tuple[UUID, Receipt, WindowChange]], partition: int,
                   now_ms: int) -> Outcome:
        """One more ask for the intents a lease did not cover (listed again, waiting for it), sized for
        them all."""
        _, first, change = short[0]
        assert first.forward is not None
        want = 2 * sum(need_of(item) or 0.0 for _, _, item in short)
        ask = self._ask(change, first.forward.stage1.policy_version, partition, first.forward.intent.agent_id,
                        want, self.leases.held(key), now_ms)
        return Outcome([ask])

    def unsent(self, partition: int) -> list[Send]:
        """On taking over a partition (its table in use): what the settled waiting intents whose marker
        is still there sent, again (their decision and audit record, or their forward); the markers go
        at the next flush."""
        unsent = [UUID(key[len(UNSENT_PREFIX):]) for key in keys_with_prefix(self.table, UNSENT_PREFIX)]
        sends: list[Send] = []
        for request_id in unsent:
            record = self._receipt(request_id)
            if record is None or record.forward is None or record.waiting:
                continue
            if record.decision is None:
                sends.append(forward_send(record.forward))
            else:
                sends += publish_sends(record.forward.intent, record.decision)
        self._unsent[partition] = unsent
        return sends

    def flushed(self, partition: int) -> None:
        """The producer delivered everything sent so far: the settled waiting intents' markers go."""
        for request_id in self._unsent.pop(partition, []):
            self.table.pop(f"{UNSENT_PREFIX}{request_id}", None)

    def gave_up(self, partition: int) -> None:
        self._unsent.pop(partition, None)

    def tick(self, partition: int, now_ms: int) -> list[Send]:
        """Return the leases due, with what was spent of them; settle the intents waiting for an ask
        unanswered for :data:`MAX_WAIT_MS` on this caught-up partition (on the hops, or expired)."""
        sends = []
        for key in self.leases.shared_keys():
            sends += self._returns(key, partition, now_ms)
            held = self.leases.held(key)
            if held.waiting and not self.leases.asking(held, now_ms, MAX_WAIT_MS):
                for outcome in self._settle_waiting(key, partition, now_ms, again=False):
                    sends += outcome.sends
        return sends

    def _returns(self, key: str, partition: int, now_ms: int) -> list[Send]:
        sends = []
        for lease, uses in self.leases.close_due(key, now_ms):
            back = LeaseReturn(lease_id=lease.lease_id, key=key, partition=partition,
                               uses_ms=tuple(at for at, _ in uses),
                               uses_values=tuple(value for _, value in uses))
            sends.append(Send(Route.SHARED, key.encode(), back.model_dump_json().encode()))
        return sends

    def _settle(
        self, intent: Intent, decision: Decision, changes: tuple[Change, ...],
        policy: CompiledPolicy | None, partition: int, now_ms: int, fingerprint: str,
    ) -> Outcome:
        """The decide stage decides alone: count an ALLOW, park a REQUIRE_APPROVAL, record, send."""
        if decision.decision is _ALLOW:
            _count(self.state, changes, intent.request_id)
        elif decision.decision is _BLOCK:
            apply(self.state, changes, _BLOCK)  # the trails of sequence rules counting BLOCKs
        request = request_of(intent, decision, policy, now_ms)
        sent, sends = decision_sends(intent, decision, request)
        if request is not None:
            items = tuple(ChangeItem.of(change) for change in changes)
            sends.append(self._park(Pending(intent=intent, decision=sent, request=request, changes=items)))
        self._write(intent.request_id, _decided(sends[0].value, fingerprint), partition, now_ms, new=True)
        return Outcome(sends, sent)

    def _park(self, pending: Pending) -> Send:
        """Keep a pending approval's intent and changes here; the Open to send to the approval stage."""
        self.table[f"{PENDING_PREFIX}{pending.intent.request_id}"] = pending.model_dump_json().encode()
        return open_send(pending)

    def handle_feedback(self, feedback: Feedback, partition: int, now_ms: int) -> list[Send]:
        """Settle a forwarded intent: keep or release the reservation, learn history, park approvals.

        Returns the Open of an approval (again, for a redelivered feedback of a pending one).
        """
        request_id = feedback.intent.request_id
        record = self._receipt(request_id)
        if record is None:
            return []  # unknown (expired)
        if record.decision is not None:
            return self._reopen(record.decision)  # already settled: a redelivery changes nothing
        kind = feedback.decision.decision
        if kind is _APPROVAL and feedback.request is None:
            raise ValueError(f"request {request_id}: a REQUIRE_APPROVAL feedback without its request")
        expired = WAIT_EXPIRED in feedback.decision.determining  # the policy never judged it: counts nothing
        self._release_held(request_id, record, None if expired else kind)
        sends: list[Send] = []
        if feedback.request is not None and kind is _APPROVAL:
            sends.append(self._park(Pending(
                intent=feedback.intent, decision=feedback.decision, request=feedback.request,
                changes=record.changes, shared=record.shared,
            )))
        receipt = Receipt(decision=feedback.decision, fingerprint=record.fingerprint)
        self._write(request_id, receipt, partition, now_ms, new=False)
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
        count = Count(request_id=request_id, changes=_by_key(pending.shared), decision=resolved.decision,
                      intent=pending.intent) if approved and pending.shared else None
        record = self._receipt(request_id)
        if record is None or record.decision is None or not record.decision.final:
            if approved:
                _count(self.state, tuple(c.to_change() for c in pending.changes), request_id)
                self.on_approved(resolved.decision)
            else:  # denied or expired: a BLOCK, for the sequence rules counting those
                apply(self.state, [c.to_change() for c in pending.changes if c.kind == "trail"], _BLOCK)
            fingerprint = record.fingerprint if record else request_fingerprint(pending.intent)
            receipt = Receipt(decision=resolved.decision, fingerprint=fingerprint, count=count)
            self._write(request_id, receipt, partition, now_ms, new=record is None)
            self.retention.note(partition, now_ms, pending_key)
        if not approved:
            return []
        if count is None:
            return approval_final_sends(pending.intent, resolved.decision)
        return [count_send(count)]


def _count(state: TableState, changes: tuple[Change, ...], request_id: UUID) -> None:
    """Apply an ALLOW's changes: windows once per request (:mod:`streams.state.table_state`), then
    history."""
    for change in changes:
        if isinstance(change, WindowChange):
            state.add_once(change, request_id)
    apply(state, [change for change in changes if not isinstance(change, WindowChange)])


@functools.lru_cache(maxsize=8)
def _budgets(policy: CompiledPolicy) -> dict[str, float]:
    """Each limit's count or max, by id."""
    return {limit.id: float(limit.count if limit.count is not None else limit.max or 0.0)
            for limit in policy.limits}


def _trails(changes: tuple[Change, ...]) -> list[TrailChange]:
    """The sequence rules' trail changes among ``changes``."""
    return [change for change in changes if isinstance(change, TrailChange)]


def _settled(waited: Receipt, decision: Decision) -> Receipt:
    """The receipt of a waiting intent once decided: its decision, and its forward kept (its intent, for
    sending the decision again after a crash)."""
    return Receipt(decision=decision, forward=waited.forward, fingerprint=waited.fingerprint)


FINGERPRINT_PREFIX = "a:"
"""Marks a receipt's fingerprint as :func:`request_fingerprint`'s; one without it (written by earlier
releases) is a hash of the intent record's bytes."""


def request_fingerprint(intent: Intent) -> str:
    """What a request id is bound to: the agent, as its credential fixes it, and the exact action (the
    intent's digest). A resend of the request is the same request and is answered with its recorded
    decision, whatever else it changes: its timestamps, wait and reply route, and also its labels and
    session id, which the policy may read (the decision stays the one made for the first). While the
    first is still travelling the shared-limit hops, its decision goes to the first's reply route.
    Another action or identity under the id is refused."""
    bound = canonical_json([intent.agent_id, intent.agent_role, intent.environment, intent.agent_owner,
                            intent.tool, intent.action.value, intent.target, intent.params])
    return FINGERPRINT_PREFIX + hashlib.blake2b(bound.encode(), digest_size=16).hexdigest()


def _same_request(fingerprint: str, intent: Intent, raw: bytes) -> bool:
    """Whether ``intent`` (``raw``) is the request a receipt with ``fingerprint`` recorded."""
    if not fingerprint:  # an earlier release's receipt made by an approval's resolution alone
        return True
    if fingerprint.startswith(FINGERPRINT_PREFIX):
        return fingerprint == request_fingerprint(intent)
    return fingerprint == hashlib.blake2b(raw, digest_size=16).hexdigest()


def _decided(body: bytes, fingerprint: str) -> bytes:
    """The JSON of ``Receipt(decision=..., fingerprint=...)`` around the decision's JSON as sent
    (serialised once)."""
    return b'{"decision":' + body + b',"fingerprint":"' + fingerprint.encode() + b'"}'


def _by_key(items: tuple[ChangeItem, ...]) -> tuple[ChangeItem, ...]:
    """Changes in the order their hops visit them (sorted keys, as forwards do)."""
    return tuple(sorted(items, key=lambda item: item.key))
