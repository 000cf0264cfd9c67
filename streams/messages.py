"""Internal messages between the stages and the idempotency records kept in the tables.

These are not part of the wire contract (``schemas/``): only the worker reads them. JSON via pydantic;
every message has a ``kind`` as its first field, so a reader can dispatch with :func:`kind_of`.
"""

from __future__ import annotations

import re
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from schemas.approval import ApprovalRequest
from schemas.common import DecisionKind
from schemas.decision import Decision
from schemas.intent import Intent
from streams.engine import Applied, Change, HistoryChange, LimitScope, TrailChange, WindowChange
from streams.stages.approval_machine import PendingApproval

_KIND = re.compile(rb'^\{"kind":"([a-z]+)"')


def kind_of(body: bytes) -> str | None:
    """The ``kind`` of an internal message (the first field of its JSON), or None."""
    found = _KIND.match(body[:32])
    return found.group(1).decode() if found else None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppliedItem(_Model):
    """An :class:`Applied` entry on the wire between stages."""

    order: int
    id: str
    decision: DecisionKind
    reason: str

    @classmethod
    def of(cls, entry: Applied) -> AppliedItem:
        return cls(order=entry.order, id=entry.id, decision=entry.decision, reason=entry.reason)

    def to_applied(self) -> Applied:
        return Applied(self.order, self.id, self.decision, self.reason)


class Reservation(_Model):
    """One window entry counted before the final decision was known (released if it is not ALLOW)."""

    key: str
    at_ms: int
    value: float | None = None


class ChangeItem(_Model):
    """A window, history or sequence-trail change, serialisable (a trail's ``limit_id`` is its sequence
    rule, ``window_ms`` its ``within``, ``counts`` the final decisions it counts)."""

    kind: Literal["window", "history", "trail"]
    key: str
    at_ms: int
    value: float | None = None
    limit_id: str = ""
    window_ms: int = 0
    keep: int | None = None
    target_hash: int = 0
    burst_window_ms: int | None = None
    counts: tuple[DecisionKind, ...] = ()

    @classmethod
    def of(cls, change: Change) -> ChangeItem:
        if isinstance(change, TrailChange):
            return cls(kind="trail", key=change.key, at_ms=change.at_ms, limit_id=change.sequence_id,
                       window_ms=change.within_ms, counts=tuple(sorted(change.counts)))
        if isinstance(change, WindowChange):
            return cls(kind="window", key=change.key, at_ms=change.at_ms, value=change.value,
                       limit_id=change.limit_id, window_ms=change.window_ms, keep=change.keep)
        return cls(kind="history", key=change.key, at_ms=change.at_ms, value=change.amount,
                   target_hash=change.target_hash, burst_window_ms=change.burst_window_ms)

    def to_change(self) -> Change:
        if self.kind == "trail":
            return TrailChange(self.limit_id, self.key, self.at_ms, self.window_ms, frozenset(self.counts))
        if self.kind == "window":
            return WindowChange(self.limit_id, LimitScope.AGENT, self.key, self.at_ms, self.value,
                                self.window_ms, self.keep)
        return HistoryChange(self.key, self.at_ms, self.value, self.target_hash, self.burst_window_ms)


class Forward(_Model):
    """The decide stage -> the shared stage (and hop -> hop): an intent whose shared-key limits are still
    to check.

    ``keys`` are the shared window keys left, the first one being this hop's; ``applied`` holds what
    applied so far (the decide stage's rules, agent limits and risk, then each hop's hits); ``reserve``
    is true when the decision so far is ALLOW, so each hop counts the action right away (and
    ``reserved`` lists those counts, released again should a later hop refuse). ``decided_ms`` is the
    decide stage's clock when it forwarded: the last hop decides at that time, so a replayed forward
    gives the same decision (and approval deadline) byte for byte.
    """

    kind: Literal["forward"] = "forward"
    intent: Intent
    stage1: Decision
    decided_ms: int
    applied: tuple[AppliedItem, ...]
    keys: tuple[str, ...]
    reserve: bool
    hits: tuple[AppliedItem, ...] = ()
    reserved: tuple[Reservation, ...] = ()


class Release(_Model):
    """Undo a reservation on a shared key (sent to the shared-limits topic, keyed by ``key``)."""

    kind: Literal["release"] = "release"
    request_id: UUID
    reservation: Reservation
    agent_id: str = ""
    """Whose request: reservations on shared windows belong to (agent, request id)."""


class Feedback(_Model):
    """Final stage -> the agent's partition: the decision made, so the decide stage settles its reservation.

    For a REQUIRE_APPROVAL, ``request`` is the ApprovalRequest made where the pending decision was
    sent (same wall-clock deadline); the decide stage parks the intent and opens the approval with it.
    """

    kind: Literal["feedback"] = "feedback"
    intent: Intent
    decision: Decision
    request: ApprovalRequest | None = None


class Count(_Model):
    """Count an approved action on its shared windows, one hop per key (keyed by the first key).

    ``changes`` are the shared-window changes still to apply, this hop's first; the last hop sends
    the final ALLOW (``decision``, audited with ``intent``), so the agent hears of the approval only
    once every limit has counted it.
    """

    kind: Literal["count"] = "count"
    request_id: UUID
    changes: tuple[ChangeItem, ...]
    decision: Decision
    intent: Intent


class Open(_Model):
    """The decide stage -> the approval stage (approval-control topic, keyed by request id): open this
    approval.

    ``policy_name`` is the pending decision's, for the final one."""

    kind: Literal["open"] = "open"
    request: ApprovalRequest
    policy_name: str = ""


class Resolved(_Model):
    """The approval stage -> the agent's partition (agent-feedback topic): the final decision."""

    kind: Literal["resolved"] = "resolved"
    decision: Decision


class Receipt(_Model):
    """Idempotency record of a request on one stage (``d|<request_id>`` in that stage's table).

    ``decision`` is set once the decision is known (the pending one, then the final one after an
    approval); ``changes`` are the decide stage's changes held while the shared hops decide, ``shared`` the
    shared-window changes the hops would make, with the ``forward`` sent (re-sent on redelivery; not sent
    yet while ``waiting`` for a lease);
    ``hits``/``reserved`` are a hop's result, replayed on redelivery; ``released`` marks reservations
    already undone. ``fingerprint`` binds the request id to the agent and the action
    (:func:`streams.stages.decide.request_fingerprint`): a redelivery or a resend has the same, a reused
    request id for another action does not.
    """

    decision: Decision | None = None
    changes: tuple[ChangeItem, ...] = ()
    shared: tuple[ChangeItem, ...] = ()
    forward: Forward | None = None
    hits: tuple[AppliedItem, ...] = ()
    reserved: tuple[Reservation, ...] = ()
    released: bool = False
    fingerprint: str = ""
    waiting: bool = False
    """The ``forward`` is not sent yet: the intent waits for a lease asked for (docs/leases.md)."""
    count: Count | None = None
    """An approval granted to an intent with shared limits: its final ALLOW is the last hop's to send,
    once every fleet window counted it, so a redelivery sends the ``Count`` again, not the ALLOW."""


class Pending(_Model):
    """A REQUIRE_APPROVAL intent parked on its agent's partition (``p|<request_id>``) while reviewers
    decide: the request opened, and the changes to apply if it is approved (``changes`` on this
    partition, ``shared`` by :class:`Count` messages to the shared-limit partitions)."""

    intent: Intent
    decision: Decision
    request: ApprovalRequest
    changes: tuple[ChangeItem, ...] = ()
    shared: tuple[ChangeItem, ...] = ()


class ApprovalEntry(_Model):
    """An approval in the approval stage's table (``a|<request_id>``).

    ``state`` is the state machine's; ``seen`` the verdicts that changed it, as (verdict id, reject
    reason or "", detail) to replay their audit records; ``closed_by`` the id of the message that
    resolved it (a verdict's id, or ``expiry``), whose redelivery re-sends ``final``.
    """

    state: PendingApproval
    policy_name: str = ""
    seen: tuple[tuple[str, str, str], ...] = ()
    closed_by: str | None = None
    final: Decision | None = None


class LeaseAsk(_Model):
    """A deciding partition -> the shared-limits partition of ``key``: lend me budget (docs/leases.md).

    ``start_ms``/``end_ms`` is the event-time span wanted, ``want`` the amount (actions or sum),
    ``need`` the least that is any use (the asking intent's); the grant goes back on the agent-feedback
    topic keyed by ``reply_key`` (an agent of ``partition``, the asker)."""

    kind: Literal["leaseask"] = "leaseask"
    ask_id: UUID
    key: str
    limit_id: str
    policy_version: str
    partition: int
    partitions: int
    reply_key: str
    start_ms: int
    end_ms: int
    want: float
    need: float


class LeaseGrant(_Model):
    """The owner -> the asking partition: the lease (``amount`` 0: nothing lent). Its id is the ask's."""

    kind: Literal["leasegrant"] = "leasegrant"
    ask_id: UUID
    key: str
    policy_version: str
    partition: int
    start_ms: int
    end_ms: int
    amount: float


class LeaseReturn(_Model):
    """The holder -> the owner, after the lease's span: what it spent, one use per action (event time,
    value), to count in the lease's place."""

    kind: Literal["leasereturn"] = "leasereturn"
    lease_id: UUID
    key: str
    partition: int
    uses_ms: tuple[int, ...] = ()
    uses_values: tuple[float, ...] = ()
