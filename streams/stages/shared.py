"""The shared stage: limits keyed by fleet, tool, target or role, on the partition of their own key
(see :mod:`streams.stages.decide` for the two-stage design)."""

from __future__ import annotations

from uuid import UUID

from schemas.common import DecisionKind
from schemas.decision import Decision
from streams.engine import CompiledLimit, CompiledPolicy, LimitScope, WindowChange, combine_hops, evaluate_hop
from streams.messages import (
    AppliedItem,
    Count,
    Feedback,
    Forward,
    LeaseAsk,
    LeaseGrant,
    LeaseReturn,
    Receipt,
    Release,
    Reservation,
)
from streams.stages.leases import (
    MIN_WINDOW_FACTOR,
    GrantRecord,
    OwnerLeases,
    grant_key,
    span_of,
    worth_leasing,
)
from streams.stages.outputs import (
    Outcome,
    Route,
    Send,
    approval_final_sends,
    count_send,
    decision_sends,
    forward_send,
    request_of,
    stopped_waiting,
    wait_expired,
)
from streams.stages.retention import DEFAULT_RETENTION_MS, Retention
from streams.state.table_state import RECEIPT_PREFIX, BytesTable, TableState

_ALLOW = DecisionKind.ALLOW


class SharedStage:
    """The shared stage, on the ``shared-limits`` partition of one shared window key."""

    def __init__(self, table: BytesTable, retention_ms: int = DEFAULT_RETENTION_MS) -> None:
        self.table = table
        self.state = TableState(table)
        self.retention = Retention(retention_ms)
        self.leases = OwnerLeases(table, self.state)

    def handle_forward(
        self, forward: Forward, policy: CompiledPolicy | None, partition: int, now_ms: int,
    ) -> Outcome:
        """Check this hop's limit (or replay it), then forward to the next key or decide."""
        self.retention.evict(self.table, partition, now_ms)
        key = forward.keys[0]
        record_key = _hop_receipt(forward.intent.agent_id, forward.intent.request_id, key)
        raw = self.table.get(record_key)
        duplicate = raw is not None
        if raw is not None:
            record = Receipt.model_validate_json(raw)
        else:
            record = self._check(forward, key, policy)
            if len(forward.keys) == 1 and stopped_waiting(forward.intent, now_ms):
                record = record.model_copy(update={"decision": wait_expired(forward.intent, forward.stage1,
                                                                            now_ms)})
            self.table[record_key] = record.model_dump_json().encode()
            self.retention.note(partition, now_ms, record_key)
        hits = (*forward.hits, *record.hits)
        reserved = (*forward.reserved, *record.reserved)
        reserve = _reserves(forward, record.hits)
        if len(forward.keys) > 1:
            nxt = forward.model_copy(update={
                "keys": forward.keys[1:], "hits": hits, "reserved": reserved, "reserve": reserve,
            })
            return Outcome([forward_send(nxt)], None, duplicate, True)
        return self._decide(forward, policy, hits, reserved, duplicate, record.decision)

    def _check(self, forward: Forward, key: str, policy: CompiledPolicy | None) -> Receipt:
        """This hop's limits (the engine's), and the action counted on them while it is still ALLOW."""
        outcome = evaluate_hop(policy, self.state, forward.intent, key, forward.stage1.policy_version)
        hits = tuple(AppliedItem.of(entry) for entry in outcome.applied)
        reserved: tuple[Reservation, ...] = ()
        if _reserves(forward, hits):
            for change in outcome.changes:
                self.state.add_once(change, forward.intent.request_id, forward.intent.agent_id)
            reserved = tuple(Reservation(key=c.key, at_ms=c.at_ms, value=c.value) for c in outcome.changes)
        return Receipt(hits=hits, reserved=reserved)

    def _decide(
        self, forward: Forward, policy: CompiledPolicy | None, hits: tuple[AppliedItem, ...],
        reserved: tuple[Reservation, ...], duplicate: bool, expired: Decision | None,
    ) -> Outcome:
        """The last hop: combine every hop's result into the decision (``expired``: the agent stopped
        waiting before this hop first saw the intent, so BLOCK ``wait_expired`` instead, recorded in
        the hop's receipt so a redelivery decides the same)."""
        intent = forward.intent
        decision = expired or combine_hops(
            policy, forward.stage1, tuple(item.to_applied() for item in forward.applied),
            tuple(hit.to_applied() for hit in hits), intent, forward.decided_ms)
        request = request_of(intent, decision, policy, forward.decided_ms)
        sent, sends = decision_sends(intent, decision, request)
        if sent.decision is not _ALLOW and not duplicate:
            sends.extend(self._release(intent.request_id, intent.agent_id, reserved))
        feedback = Feedback(intent=intent, decision=sent, request=request)
        sends.append(Send(Route.FEEDBACK, intent.agent_id.encode(), feedback.model_dump_json().encode()))
        return Outcome(sends, sent, duplicate)

    def _release(self, request_id: UUID, agent: str, reserved: tuple[Reservation, ...]) -> list[Send]:
        return [
            Send(Route.SHARED, r.key.encode(),
                 Release(request_id=request_id, reservation=r, agent_id=agent).model_dump_json().encode())
            for r in reserved
        ]

    def handle_release(self, release: Release, partition: int, now_ms: int) -> None:
        """Undo one reservation, once, and only one this hop made for that request (a release naming
        anything else changes nothing)."""
        receipt = _hop_receipt(release.agent_id, release.request_id, release.reservation.key)
        marker = f"{receipt}|released"
        if marker in self.table:
            return
        raw = self.table.get(receipt)
        if raw is None or release.reservation not in Receipt.model_validate_json(raw).reserved:
            return
        r = release.reservation
        self.state.release(r.key, r.at_ms, r.value, release.request_id, release.agent_id)
        self.table[marker] = b"1"
        self.retention.note(partition, now_ms, marker)

    def handle_count(self, count: Count, partition: int, now_ms: int) -> list[Send]:
        """Count an approved action on this hop's windows (once per request: see
        :mod:`streams.state.table_state`), then pass the rest on; the last hop sends the final ALLOW."""
        self.retention.evict(self.table, partition, now_ms)
        key = count.changes[0].key
        for item in count.changes:
            change = item.to_change()
            if item.key == key and isinstance(change, WindowChange):
                self.state.add_once(change, count.request_id, count.intent.agent_id)
        rest = tuple(item for item in count.changes if item.key != key)
        if rest:
            return [count_send(count.model_copy(update={"changes": rest}))]
        return approval_final_sends(count.intent, count.decision)


    def handle_ask(self, ask: LeaseAsk, policy: CompiledPolicy | None, partition: int,
                   now_ms: int) -> list[Send]:
        """Lend the asking partition what fits of this key's budget (docs/leases.md), once per ask (a
        redelivered ask gets the same grant); an ask this limit cannot serve gets nothing lent."""
        self.retention.evict(self.table, partition, now_ms)
        record = self.leases.record(ask.ask_id)
        if record is None:
            limit = _leasable(policy, ask)
            record = GrantRecord(
                key=ask.key, partition=ask.partition, reply_key=ask.reply_key,
                counting=limit is None or limit.count is not None, start_ms=ask.start_ms,
                end_ms=ask.end_ms, amount=0.0, window_ms=limit.window_ms if limit else 0,
                keep=limit.keep if limit else None, settled=True,
            )
            if limit is None:
                self.table[grant_key(ask.ask_id)] = record.model_dump_json().encode()
            else:
                budget = float(limit.count if limit.count is not None else limit.max or 0.0)
                record = self.leases.lend(ask.ask_id, record, ask.want, ask.need, ask.partitions, budget)
            self.retention.note(partition, now_ms, grant_key(ask.ask_id))
        grant = LeaseGrant(ask_id=ask.ask_id, key=record.key, policy_version=ask.policy_version,
                           partition=record.partition, start_ms=record.start_ms, end_ms=record.end_ms,
                           amount=record.amount)
        return [Send(Route.FEEDBACK, record.reply_key.encode(), grant.model_dump_json().encode())]

    def handle_return(self, back: LeaseReturn, partition: int, now_ms: int) -> None:
        """Count what a returned lease spent in its place (once; a return naming a lease this key did
        not lend to that partition changes nothing)."""
        self.retention.evict(self.table, partition, now_ms)
        if len(back.uses_ms) != len(back.uses_values):
            raise ValueError(f"lease {back.lease_id}: as many use times as values expected")
        self.leases.settle(back.lease_id, back.key, back.partition, list(zip(back.uses_ms, back.uses_values,
                                                                             strict=True)))


def _leasable(policy: CompiledPolicy | None, ask: LeaseAsk) -> CompiledLimit | None:
    """The shared limit an ask is for, when a lease of that span may be lent on it."""
    if policy is None or not 0 <= ask.partition < ask.partitions or ask.want <= 0 or ask.need < 0:
        return None
    span = ask.end_ms - ask.start_ms
    if span <= 0:
        return None
    for limit in policy.limits:
        if limit.id == ask.limit_id:
            fits = limit.scope is LimitScope.SHARED and ask.key.startswith(f"{limit.id}|")
            budget = float(limit.count if limit.count is not None else limit.max or 0.0)
            worth = worth_leasing(budget, limit.window_ms, ask.need, ask.partitions)
            longest = span_of(0, limit.window_ms)
            fits = fits and span <= longest[1] - longest[0] and limit.window_ms >= MIN_WINDOW_FACTOR * span
            return limit if fits and worth else None
    return None


def _reserves(forward: Forward, hits: tuple[AppliedItem, ...]) -> bool:
    """Whether the decision is still ALLOW after this hop's ``hits``, so the action is counted now."""
    return forward.reserve and all(hit.decision is _ALLOW for hit in (*forward.hits, *hits))


def _hop_receipt(agent: str, request_id: UUID, key: str) -> str:
    """A hop's receipt of a request on ``key``. Request ids are unique per agent only (agents choose
    them), and a shared key sees every agent's: another agent reusing an id is another request."""
    return f"{RECEIPT_PREFIX}{agent}\x1f{request_id}|{key}"
