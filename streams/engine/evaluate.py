"""Evaluate one intent: rules, limits and risk into a Decision plus the state changes it would make."""

from __future__ import annotations

import contextlib
from bisect import bisect_right
from datetime import UTC, datetime
from typing import NamedTuple
from uuid import UUID

from pydantic import ValidationError

from schemas.common import DecisionKind
from schemas.decision import DEFAULT, ENGINE_ERROR, INVALID_INTENT, Decision, Risk
from schemas.intent import Intent, raw_fields
from streams.engine import build
from streams.engine.build import Applied
from streams.engine.compiler import CompiledLimit, CompiledPolicy, CompiledSequence, LimitScope
from streams.engine.errors import ConditionError
from streams.engine.keys import escape
from streams.engine.risk import HistoryChange, as_float
from streams.engine.state import HistoryState, StateStore, TrailState, WindowState

NIL_UUID = UUID(int=0)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
AGENT_SCOPES: frozenset[LimitScope] = frozenset({LimitScope.AGENT})
SHARED_SCOPES: frozenset[LimitScope] = frozenset({LimitScope.SHARED})
ALL_SCOPES: frozenset[LimitScope] = AGENT_SCOPES | SHARED_SCOPES
_MAX_MESSAGE = 1000
_ALLOW, _APPROVAL, _BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK
_tuple = tuple.__new__
_new = object.__new__


class WindowChange(NamedTuple):
    """Count one allowed action in the window at ``key`` (owned by the partition of ``scope``)."""

    limit_id: str
    scope: LimitScope
    key: str
    at_ms: int
    value: float | None
    window_ms: int
    keep: int | None


class TrailChange(NamedTuple):
    """Record an earlier action of sequence rule ``sequence_id`` at ``key`` when the action's final
    decision is one of ``counts`` (always agent-scoped)."""

    sequence_id: str
    key: str
    at_ms: int
    within_ms: int
    counts: frozenset[DecisionKind]


Change = WindowChange | HistoryChange | TrailChange


class LimitOutcome(NamedTuple):
    """Limits evaluated on their own (for keys owned elsewhere): the ones that applied and the changes."""

    applied: tuple[Applied, ...]
    changes: tuple[WindowChange, ...]


class Evaluation:
    """The decision on one intent and the state changes to apply if it ends ALLOW.

    ``kind`` is the verdict. ``decision``, the wire Decision (reasons, rules, risk), is built on first
    access: a caller that needs only the verdict does not pay for it, and it is built once.
    """

    __slots__ = (
        "_at", "_decision", "_intent", "_policy", "_risk", "applied", "changes", "default_used", "kind",
    )

    def __init__(
        self, decision: Decision, changes: tuple[Change, ...], applied: tuple[Applied, ...] = (),
        default_used: bool = False,
    ) -> None:
        self._decision: Decision | None = decision
        self.kind: DecisionKind = decision.decision
        self.changes = changes
        self.applied = applied
        self.default_used = default_used
        self._policy: CompiledPolicy | None = None
        self._intent: Intent | None = None
        self._risk: Risk = decision.risk
        self._at: datetime | None = decision.decided_at

    @property
    def decision(self) -> Decision:
        """The Decision to publish (built on first access)."""
        decision = self._decision
        if decision is None:
            assert self._policy is not None and self._intent is not None
            decision = self._decision = _decision_of(
                self._policy, self._intent, self.kind, self.applied, self.default_used, self._risk, self._at,
            )
            self._policy = self._intent = None
        return decision

    def __repr__(self) -> str:
        return f"Evaluation({self.kind.value}, {len(self.applied)} applied, {len(self.changes)} changes)"


def blocked(
    intent: Intent, policy: CompiledPolicy | None, marker: str, detail: str, at: datetime | None = None,
) -> Decision:
    """BLOCK without a rule (no policy, event-time skew, an engine failure): ``determining`` is the
    marker, the reason ``<marker>: <detail>``; decided at ``at`` (default: the intent's event time)."""
    version, name = (policy.version, policy.name) if policy is not None else ("", "")
    return build.decision(
        intent.request_id, intent.agent_id, _BLOCK, (f"{marker}: {detail}",), (), (marker,), build.NO_RISK,
        version, intent.occurred_at if at is None else at, name,
    )


def _verdict(
    policy: CompiledPolicy, applied: list[Applied] | tuple[Applied, ...],
) -> tuple[DecisionKind, bool]:
    """The combined decision of what applied (in policy order) and whether the default was used.

    ``default`` counts only when no rule applied; BLOCK > REQUIRE_APPROVAL > ALLOW.
    """
    rule_applied = bool(applied) and applied[0].order < policy.rule_count
    kind = _ALLOW if rule_applied else policy.default
    for entry in applied:
        decision = entry.decision
        if decision is _BLOCK:
            return _BLOCK, not rule_applied
        if decision is _APPROVAL and kind is _ALLOW:
            kind = _APPROVAL
    return kind, not rule_applied


def _decision_of(
    policy: CompiledPolicy, intent: Intent, kind: DecisionKind, applied: tuple[Applied, ...],
    default_used: bool, risk: Risk, at: datetime | None,
) -> Decision:
    """The wire Decision: a reason and an id for everything that applied (the default's reason first),
    and what determined it: the entries whose decision is ``kind`` (after ``default`` when the default
    was used and is ``kind``). Decided at ``at`` (None: the intent's event time)."""
    reasons = [policy.default_reason] if default_used else []
    determining = [DEFAULT] if default_used and policy.default is kind else []
    rules = []
    for entry in applied:
        reasons.append(entry.reason)
        rules.append(entry.id)
        if entry.decision is kind:
            determining.append(entry.id)
    return build.decision(
        intent.request_id, intent.agent_id, kind, tuple(reasons), tuple(rules), tuple(determining), risk,
        policy.version, intent.occurred_at if at is None else at, policy.name,
    )


def _error(order: int, entry_id: str, exc: Exception) -> Applied:
    return Applied(order, entry_id, _BLOCK, f"{entry_id}: evaluation error: {exc}")


def _limits(
    limits: tuple[CompiledLimit, ...], state: StateStore, intent: Intent, at_ms: int,
    scopes: frozenset[LimitScope], applied: list[Applied], changes: list[Change],
) -> None:
    """For each limit: note a hit if this action would exceed it, and the window change it would make."""
    agent: str | None = None
    every = scopes is ALL_SCOPES
    get_window = state.get_window
    for limit in limits:
        if not every and limit.scope not in scopes:
            continue
        try:
            if (limit.rest is not None and not limit.rest(intent)) or (
                limit.when is not None and not limit.when(intent)
            ):
                continue
            value: float | None = None
            if limit.sum_of is not None:
                value = as_float(limit.sum_of(intent))
                if value is None:
                    raise ConditionError(f"{limit.sum_field} is not a finite number")
        except Exception as exc:
            applied.append(_error(limit.order, limit.id, exc))
            continue
        prefix = limit.agent_prefix
        if prefix is not None:
            if agent is None:
                agent = escape(intent.agent_id)
            key = prefix + agent
        else:
            key = limit.key_of(intent)
        window = get_window(key)
        count = limit.count
        if count is not None:
            used = 0
            if window is not None:
                times = window.times_ms
                if times and at_ms >= times[-1]:  # in order: the window ending now is the fullest
                    used = len(times) - bisect_right(times, at_ms - limit.window_ms)
                elif times:
                    used = window.peak_count(at_ms, limit.window_ms)
            if used >= count:
                reason = f"{limit.id}: {used} actions already in {limit.window} (at most {count})"
                applied.append(Applied(limit.order, limit.id, limit.decision, reason))
        else:
            assert value is not None and limit.max is not None
            total = window.peak_total(at_ms, limit.window_ms, value) if window is not None else value
            if total > limit.max:
                applied.append(Applied(limit.order, limit.id, limit.decision,
                                       f"{limit.id}: {total:g} with this {value:g} in {limit.window} "
                                       f"exceeds {limit.max:g}"))
        changes.append(_tuple(WindowChange, (
            limit.id, limit.scope, key, at_ms, value, limit.window_ms, limit.keep,
        )))


def _sequences(
    plan_sequences: tuple[CompiledSequence, ...], triggers: tuple[CompiledSequence, ...], state: StateStore,
    intent: Intent, at_ms: int, applied: list[Applied], changes: list[Change],
) -> None:
    """Sequence rules: a hit for each whose earlier action (same key, counted decision) lies in
    ``(at - within, at]``, and the trail change of each whose earlier action this could be. A later
    action's condition that cannot be evaluated BLOCKs naming the rule; an earlier action's records
    the action (it might have matched: the rule errs on the strict side)."""
    for seq in plan_sequences:
        try:
            if (seq.rest is not None and not seq.rest(intent)) or (
                seq.when is not None and not seq.when(intent)
            ):
                continue
        except Exception as exc:
            applied.append(_error(seq.order, seq.id, exc))
            continue
        trail = state.get_trail(seq.key_of(intent))
        earlier = trail.latest(at_ms, seq.within_ms) if trail is not None else None
        if earlier is not None:
            what = seq.description or seq.decision.value
            since = datetime.fromtimestamp(earlier / 1000, UTC).isoformat(timespec="milliseconds")
            applied.append(Applied(seq.order, seq.id, seq.decision,
                                   f"{seq.id}: {what} (earlier action at {since}, within {seq.within})"))
    for seq in triggers:
        if _is_earlier_action(seq, intent):
            key = seq.key_of(intent)
            changes.append(_tuple(TrailChange, (seq.id, key, at_ms, seq.within_ms, seq.counts)))


def _is_earlier_action(seq: CompiledSequence, intent: Intent) -> bool:
    """Whether ``intent`` is an earlier action of ``seq``; True when that cannot be evaluated."""
    after = seq.after
    try:
        return (after.rest is None or after.rest(intent)) and (after.when is None or bool(after.when(intent)))
    except Exception:
        return True


def evaluate(
    policy: CompiledPolicy, state: StateStore, intent: Intent, scopes: frozenset[LimitScope] = ALL_SCOPES,
    decided_at: datetime | None = None,
) -> Evaluation:
    """Decide on ``intent``: rules, risk and the limits of ``scopes``. Reads state, never writes it.

    Never raises: an internal failure BLOCKs with reason ``engine_error: ...``. The Decision is built
    when ``.decision`` is first read (``.kind`` is the verdict), stamped ``decided_at`` (default: the
    intent's event time).
    """
    try:
        plan = policy.plans.get((intent.tool, intent.action._value_))
        if plan is None:
            plan = policy.plan(intent.tool, intent.action)
        rules, limits, sequences, triggers = plan
        applied: list[Applied] = []
        for rule in rules:
            try:
                rest, when = rule.rest, rule.when
                if (rest is None or rest(intent)) and (when is None or when(intent)):
                    applied.append(rule.applied)
            except Exception as exc:
                applied.append(_error(rule.order, rule.id, exc))
        at_ms = intent.occurred_at_ms
        changes: list[Change] = []
        if limits:
            _limits(limits, state, intent, at_ms, scopes, applied, changes)
        if (sequences or triggers) and LimitScope.AGENT in scopes:
            _sequences(sequences, triggers, state, intent, at_ms, applied, changes)
        risk = build.NO_RISK
        if policy.risk is not None:
            risk, threshold, lesson = policy.risk.assess(intent, state, at_ms)
            if threshold is not None:
                applied.append(threshold)
            if lesson is not None:
                changes.append(lesson)
        kind, default_used = _verdict(policy, applied)
    except Exception as exc:
        return Evaluation(blocked(intent, policy, ENGINE_ERROR, str(exc), decided_at), ())
    evaluation: Evaluation = _new(Evaluation)  # the Decision is built from these parts when asked for
    evaluation._decision = None
    evaluation.kind = kind
    evaluation.changes = tuple(changes)
    evaluation.applied = tuple(applied)
    evaluation.default_used = default_used
    evaluation._policy = policy
    evaluation._intent = intent
    evaluation._risk = risk
    evaluation._at = decided_at
    return evaluation


def evaluate_limits(
    policy: CompiledPolicy, state: StateStore, intent: Intent, scopes: frozenset[LimitScope] = SHARED_SCOPES,
) -> LimitOutcome:
    """Only the limits of ``scopes`` (e.g. fleet budgets kept on another partition). Never raises."""
    applied: list[Applied] = []
    changes: list[Change] = []
    try:
        limits = policy.plan(intent.tool, intent.action).limits
        _limits(limits, state, intent, intent.occurred_at_ms, scopes, applied, changes)
    except Exception as exc:
        return LimitOutcome((Applied(policy.risk_order, ENGINE_ERROR, _BLOCK, f"engine_error: {exc}"),), ())
    return LimitOutcome(tuple(applied), tuple(c for c in changes if isinstance(c, WindowChange)))


def combine(
    policy: CompiledPolicy, evaluation: Evaluation, outcome: LimitOutcome, intent: Intent,
    decided_at: datetime | None = None,
) -> Evaluation:
    """Merge limits evaluated separately into an evaluation (most restrictive wins, policy order kept).

    The merged Decision keeps the first one's risk, and its ``decided_at`` unless one is given; an
    engine failure stays as it is.
    """
    applied = tuple(sorted([*evaluation.applied, *outcome.applied], key=lambda entry: entry.order))
    changes = (*evaluation.changes, *outcome.changes)
    first = evaluation.decision
    if first.reasons and first.reasons[0].startswith(ENGINE_ERROR):
        return Evaluation(first, changes, applied, evaluation.default_used)
    kind, default_used = _verdict(policy, applied)
    at = first.decided_at if decided_at is None else decided_at
    decision = _decision_of(policy, intent, kind, applied, default_used, first.risk, at)
    return Evaluation(decision, changes, applied, default_used)


def apply(
    state: StateStore, changes: tuple[Change, ...] | list[Change], final: DecisionKind = _ALLOW,
) -> None:
    """Apply the changes of an evaluation whose final decision is ``final``: window and history
    changes only for an ALLOW, a sequence rule's trail change when it counts ``final``."""
    for change in changes:
        if isinstance(change, TrailChange):
            if final in change.counts:
                trail = state.get_trail(change.key) or TrailState()
                trail.add(change.at_ms, change.within_ms)
                state.put_trail(change.key, trail)
        elif final is not _ALLOW:
            continue
        elif isinstance(change, WindowChange):
            window = state.get_window(change.key) or WindowState()
            window.add(change.at_ms, change.value, change.window_ms, change.keep)
            state.put_window(change.key, window)
        else:
            history = state.get_history(change.key) or HistoryState()
            history.observe(change.at_ms, change.amount, change.target_hash, change.burst_window_ms)
            state.put_history(change.key, history)


def parse_intent(raw: bytes | str) -> Intent:
    """Parse and validate one JSON intent; raises pydantic's ValidationError."""
    return Intent.model_validate_json(raw)


def invalid_intent(
    raw: bytes | str, error: Exception, policy: CompiledPolicy | None, at: datetime | None = None,
    agent_id: str = "",
) -> Decision:
    """BLOCK ``invalid_intent: <message>`` for input that is not a valid intent.

    ``request_id`` comes from the raw object when it is a valid UUID (else the nil UUID), ``agent_id``
    from it when it is a string (else the ``agent_id`` given); ``decided_at`` is ``at`` or, without
    one, the raw ``occurred_at`` when that is an aware timestamp, else the epoch.
    """
    request_id, decided_at = NIL_UUID, EPOCH if at is None else at
    obj = raw_fields(raw)
    if obj is not None:
        with contextlib.suppress(ValueError):
            request_id = UUID(str(obj.get("request_id")))
        if at is None:
            try:
                when = datetime.fromisoformat(str(obj.get("occurred_at")))
                if when.tzinfo is not None:
                    decided_at = when.astimezone(UTC)
            except (ValueError, OverflowError):
                pass
        if isinstance(obj.get("agent_id"), str) and obj["agent_id"]:
            agent_id = obj["agent_id"]
    version, name = (policy.version, policy.name) if policy is not None else ("", "")
    return build.decision(
        request_id, agent_id[:256], _BLOCK, (f"{INVALID_INTENT}: {_message(error)}",), (), (INVALID_INTENT,),
        build.NO_RISK, version, decided_at, name,
    )


def _message(error: Exception) -> str:
    if isinstance(error, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or 'intent'}: {e['msg']}"
            for e in error.errors(include_url=False, include_input=False)
        ]
        text = "; ".join(parts)
    else:
        text = str(error) or type(error).__name__
    return text[:_MAX_MESSAGE]
