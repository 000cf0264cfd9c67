"""Internal messages between the two stages and the idempotency records kept in the tables.

These are not part of the wire contract (``schemas/``): only the worker reads them. JSON via pydantic.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from schemas.common import DecisionKind
from schemas.decision import Decision
from schemas.intent import Intent
from streams.engine import Applied, Change, HistoryChange, LimitScope, WindowChange


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
    """A window or history change, serialisable."""

    kind: Literal["window", "history"]
    key: str
    at_ms: int
    value: float | None = None
    limit_id: str = ""
    window_ms: int = 0
    keep: int | None = None
    target_hash: int = 0
    burst_window_ms: int | None = None

    @classmethod
    def of(cls, change: Change) -> ChangeItem:
        if isinstance(change, WindowChange):
            return cls(kind="window", key=change.key, at_ms=change.at_ms, value=change.value,
                       limit_id=change.limit_id, window_ms=change.window_ms, keep=change.keep)
        return cls(kind="history", key=change.key, at_ms=change.at_ms, value=change.amount,
                   target_hash=change.target_hash, burst_window_ms=change.burst_window_ms)

    def to_change(self) -> Change:
        if self.kind == "window":
            return WindowChange(self.limit_id, LimitScope.AGENT, self.key, self.at_ms, self.value,
                                self.window_ms, self.keep)
        return HistoryChange(self.key, self.at_ms, self.value, self.target_hash, self.burst_window_ms)


class Forward(_Model):
    """Stage 1 -> stage 2 (and hop -> hop): an intent whose shared-key limits are still to check.

    ``keys`` are the shared window keys left, the first one being this hop's; ``applied`` holds what
    applied so far (stage 1's rules, agent limits and risk, then each hop's hits); ``reserve`` is true
    when the decision so far is ALLOW, so each hop counts the action right away (and ``reserved``
    lists those counts, released again should a later hop refuse).
    """

    kind: Literal["forward"] = "forward"
    intent: Intent
    stage1: Decision
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


class Feedback(_Model):
    """Final stage -> the agent's partition: the decision made, so stage 1 settles its reservation."""

    kind: Literal["feedback"] = "feedback"
    intent: Intent
    decision: Decision


class Record(_Model):
    """Idempotency record of a request on one stage (``d|<request_id>`` in that stage's table).

    ``decision`` is set once the decision is known; ``changes`` are stage 1's changes held while the
    shared hops decide, with the ``forward`` sent (re-sent on redelivery); ``hits``/``reserved`` are
    a hop's result, replayed on redelivery; ``released`` marks reservations already undone.
    """

    decision: Decision | None = None
    changes: tuple[ChangeItem, ...] = ()
    forward: Forward | None = None
    hits: tuple[AppliedItem, ...] = ()
    reserved: tuple[Reservation, ...] = ()
    released: bool = False


class Pending(_Model):
    """A REQUIRE_APPROVAL intent waiting for reviewers, with the changes to apply if it is approved."""

    intent: Intent
    decision: Decision
    changes: tuple[ChangeItem, ...] = ()
