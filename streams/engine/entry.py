"""The one way into the engine: an intent's bytes in, one :class:`Result` out.

Workers, ``sluicegate evaluate``, backtests and policy tests all go through :func:`evaluate_raw` (or
:func:`evaluate_intent` for an intent already parsed), so they make the same decisions; only the
:class:`Context` differs. A worker passes its clock, the intent record's Kafka timestamp, the skew bound
and the scopes whose state it holds (:data:`AGENT_SCOPES`); a replay passes nothing (:data:`REPLAY`):
event time throughout, no skew bound, every scope.

When shared-key limits are left to other partitions, the result names the shared window changes to
check there (:attr:`Result.shared`); each hop checks its key with :func:`evaluate_hop` and the last one
decides with :func:`combine_hops`. The stages route messages and keep state; they never build or
combine a decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from schemas.common import DecisionKind
from schemas.decision import (
    ENGINE_ERROR,
    EVENT_TIME_SKEW,
    NO_POLICY,
    POLICY_UNAVAILABLE,
    WAIT_EXPIRED,
    Decision,
)
from schemas.intent import MAX_INTENT_BYTES, Intent
from streams.engine import build
from streams.engine.build import Applied
from streams.engine.compiler import CompiledPolicy, LimitScope
from streams.engine.evaluate import (
    AGENT_SCOPES,
    ALL_SCOPES,
    SHARED_SCOPES,
    Change,
    Evaluation,
    LimitOutcome,
    WindowChange,
    apply,
    blocked,
    combine,
    evaluate,
    evaluate_limits,
    invalid_intent,
)
from streams.engine.state import InMemoryState, StateStore

_ALLOW, _BLOCK = DecisionKind.ALLOW, DecisionKind.BLOCK
_SHARED = LimitScope.SHARED
_EMPTY = InMemoryState()
_LAST = 1 << 30
"""Policy order of entries that belong to no rule, limit or threshold (after all of them)."""


@dataclass(frozen=True, slots=True)
class Context:
    """What the caller knows of an intent besides its bytes. The engine reads no clock: every time is
    here, in ms since the epoch.

    ``now_ms``: the worker's clock, the decision's ``decided_at`` (None: the intent's event time, as in
    replays). ``arrived_ms``: when the intent reached Kafka (the record's timestamp; None: ``now_ms``).
    ``max_skew_ms``: BLOCK (``event_time_skew``) an intent whose ``occurred_at`` is further than this
    from its arrival (None: no bound). ``scopes``: the limits whose state the caller holds; shared-key
    limits outside them are returned to check elsewhere. ``key``: the record's key (the agent id),
    naming the agent of an invalid intent that names none. ``admit``: the caller's check of a parsed
    intent before anything else (a worker's credentials and partition): a (marker, detail) it returns
    BLOCKs the intent with that marker, and the result is :attr:`Result.refused`.
    """

    now_ms: int | None = None
    arrived_ms: int | None = None
    max_skew_ms: int | None = None
    scopes: frozenset[LimitScope] = ALL_SCOPES
    key: bytes | None = None
    admit: Callable[[Intent], tuple[str, str] | None] | None = None


REPLAY = Context()
"""The context of a replay (``sluicegate evaluate``, backtests, policy tests)."""


class Result(NamedTuple):
    """The engine's answer on one intent (a tuple: built once per intent on the hot path).

    ``intent`` is None when the input was not a valid intent. ``decision`` is final, except that a
    REQUIRE_APPROVAL still awaits its reviewers and, when ``shared`` is not empty, it is the decision
    so far: the shared window changes in ``shared`` must still be checked where their keys live
    (:func:`evaluate_hop`, then :func:`combine_hops`). ``changes`` are the state changes to apply
    (here) if the final decision is ALLOW; ``applied`` is what applied so far, for the last hop.
    """

    intent: Intent | None
    decision: Decision
    changes: tuple[Change, ...] = ()
    shared: tuple[WindowChange, ...] = ()
    applied: tuple[Applied, ...] = ()
    refused: bool = False
    """The context's ``admit`` refused the intent: it is answered, and nothing is recorded or counted."""


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def evaluate_raw(
    policy: CompiledPolicy | None, state: StateStore, raw: bytes | str, context: Context = REPLAY,
) -> Result:
    """Parse, validate and decide one raw JSON intent. Reads state, never writes it; never raises.

    Input over ``MAX_INTENT_BYTES`` is not validated; it and any other invalid input are a BLOCK
    ``invalid_intent`` (with the request id and agent of the raw object when it has them, else the
    context's key as the agent; the nil request id when it has none).
    """
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode())
    try:
        if size > MAX_INTENT_BYTES:
            raise ValueError(f"the intent is {size} bytes; the limit is {MAX_INTENT_BYTES}")
        intent = Intent.model_validate_json(raw)
    except Exception as exc:
        key = context.key
        agent = key.decode("utf-8", "replace")[:256] if key else ""
        at = None if context.now_ms is None else _utc(context.now_ms)
        return Result(None, invalid_intent(raw, exc, policy, at, agent))
    return evaluate_intent(policy, state, intent, context)


def evaluate_intent(
    policy: CompiledPolicy | None, state: StateStore, intent: Intent, context: Context = REPLAY,
) -> Result:
    """Decide one valid intent (see :func:`evaluate_raw`): reached after its agent stopped waiting (by
    the worker's clock) → BLOCK ``wait_expired``; no policy → BLOCK ``no_policy``; an intent stamped too
    far from its arrival → BLOCK ``event_time_skew``; else rules, risk and limits.

    Shared-key limits come last, as a worker checks them: only when the rest is not BLOCK already, and
    a shared limit that cannot be evaluated BLOCKs without the others. Outside the context's scopes
    they are left to their own partitions (:attr:`Result.shared`).
    """
    now_ms = context.now_ms
    at = None if now_ms is None else _utc(now_ms)
    if context.admit is not None and (refusal := context.admit(intent)) is not None:
        return Result(intent, blocked(intent, policy, *refusal, at), refused=True)
    if at is not None and intent.wait_until is not None and at > intent.wait_until:
        detail = f"the agent stopped waiting at {intent.wait_until.isoformat()}; decided at {at.isoformat()}"
        return Result(intent, blocked(intent, policy, WAIT_EXPIRED, detail, at))
    if policy is None:
        return Result(intent, blocked(intent, None, NO_POLICY, "no valid policy is loaded", at))
    bound = context.max_skew_ms
    if bound is not None:
        arrived = context.arrived_ms if context.arrived_ms is not None else now_ms
        if arrived is not None and abs(skew := intent.occurred_at_ms - arrived) > bound:
            return Result(intent, blocked(intent, policy, EVENT_TIME_SKEW, _skew(skew, bound), at))
    if not policy.has_fleet_limits:
        evaluation = evaluate(policy, state, intent, ALL_SCOPES, at)
        return Result(intent, evaluation.decision, evaluation.changes, (), evaluation.applied)
    evaluation = evaluate(policy, state, intent, AGENT_SCOPES, at)
    if evaluation.kind is not _BLOCK:
        here = _SHARED in context.scopes
        outcome = evaluate_limits(policy, state if here else _EMPTY, intent, SHARED_SCOPES)
        counted = {change.limit_id for change in outcome.changes}
        errors = tuple(entry for entry in outcome.applied if entry.id not in counted)
        if errors:  # a shared limit that cannot be evaluated never grants: BLOCK here
            evaluation = combine(policy, evaluation, LimitOutcome(errors, ()), intent)
        elif outcome.changes and not here:  # checked where their keys live
            shared = outcome.changes
            return Result(intent, evaluation.decision, evaluation.changes, shared, evaluation.applied)
        elif outcome.changes:  # the caller holds the shared state too: every hop, here
            evaluation = combine(policy, evaluation, outcome, intent)
    return Result(intent, evaluation.decision, evaluation.changes, (), evaluation.applied)


def _skew(skew_ms: int, max_skew_ms: int) -> str:
    """``occurred_at`` is ``skew_ms`` away from when the intent reached Kafka (positive: ahead). Windows
    count in event time, so an intent stamped far from then could spread a burst over windows that
    never fill."""
    where = "after" if skew_ms > 0 else "before"
    return (f"occurred_at is {abs(skew_ms) / 1000:,.0f} s {where} the intent reached Kafka "
            f"(at most {max_skew_ms / 1000:,.0f} s)")


def evaluate_hop(
    policy: CompiledPolicy | None, state: StateStore, intent: Intent, key: str, policy_version: str = "",
) -> LimitOutcome:
    """One shared-limit hop: the limits whose window is ``key`` that this action would exceed (and an
    engine failure), and the changes that count it there. Reads state, never writes it.

    Without the policy (version ``policy_version`` is no longer known) the hop BLOCKs
    (``policy_unavailable``) and counts nothing.
    """
    if policy is None:
        reason = f"{POLICY_UNAVAILABLE}: version {policy_version} is no longer known"
        return LimitOutcome((Applied(_LAST, POLICY_UNAVAILABLE, _BLOCK, reason),), ())
    outcome = evaluate_limits(policy, state, intent, SHARED_SCOPES)
    mine = tuple(change for change in outcome.changes if change.key == key)
    ids = {change.limit_id for change in mine}
    hits = tuple(entry for entry in outcome.applied if entry.id in ids or entry.id == ENGINE_ERROR)
    return LimitOutcome(hits, mine)


def combine_hops(
    policy: CompiledPolicy | None, first: Decision, applied: tuple[Applied, ...], hits: tuple[Applied, ...],
    intent: Intent, decided_ms: int,
) -> Decision:
    """The final decision of an intent whose shared limits were checked hop by hop: ``first`` (the
    decision so far, with what ``applied`` to it) combined with every hop's ``hits``, decided at
    ``decided_ms`` (when ``first`` was, so a replayed hop gives the same bytes). Without the policy:
    BLOCK, ``policy_unavailable``."""
    at = _utc(decided_ms)
    if policy is None:
        return build.decision(
            first.request_id, first.agent_id, _BLOCK, (*first.reasons, *(hit.reason for hit in hits)),
            first.rules, (POLICY_UNAVAILABLE,), first.risk, first.policy_version, at, first.policy_name,
        )
    return combine(policy, Evaluation(first, (), applied), LimitOutcome(hits, ()), intent, at).decision


def decide(policy: CompiledPolicy, state: StateStore, intent: Intent) -> Decision:
    """Decide a replayed intent and apply its changes for that decision (an ALLOW counts and teaches; a
    BLOCK records what sequence rules count it for; a pending approval changes nothing) (backtests,
    policy tests)."""
    result = evaluate_intent(policy, state, intent)
    apply(state, result.changes, result.decision.decision)  # a REQUIRE_APPROVAL applies nothing
    return result.decision


def decide_raw(policy: CompiledPolicy | None, state: StateStore, raw: bytes | str) -> Decision:
    """Parse, validate and decide one replayed raw JSON intent, applying its changes (as
    :func:`decide`); never raises
    (``sluicegate evaluate``). Invalid input → BLOCK ``invalid_intent``; no policy → BLOCK ``no_policy``."""
    result = evaluate_raw(policy, state, raw)
    apply(state, result.changes, result.decision.decision)  # a REQUIRE_APPROVAL applies nothing
    return result.decision
