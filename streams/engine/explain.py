"""Why a policy decides an intent as it does: every rule, limit, risk factor and threshold, whether it
applied, and if not the first thing that failed with the value seen (``sluicegate explain``).

The decision, what applied and what determined it come from the engine itself
(:func:`streams.engine.entry.evaluate_intent`), so an explanation never disagrees with a decision;
this module only walks the policy beside it to say why the rest did not apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.decision import Decision
from schemas.intent import Intent
from schemas.policy import (
    AllCondition,
    AnyCondition,
    Comparison,
    Match,
    NotCondition,
    Schedule,
    ScheduleCondition,
)
from streams.engine.compiler import CompiledLimit, CompiledPolicy
from streams.engine.conditions import (
    MISSING,
    compile_comparison,
    compile_schedule,
    field_getter,
    glob_matcher,
)
from streams.engine.entry import evaluate_intent
from streams.engine.errors import ConditionError
from streams.engine.keys import history_key
from streams.engine.loader import Lines, line_of
from streams.engine.state import InMemoryState, StateStore

_MATCH_FIELDS = ("tool", "action", "target", "environment", "agent_role", "agent_id")


@dataclass(frozen=True, slots=True)
class Entry:
    """One rule, limit, sequence, risk factor or threshold, and what it did to the intent."""

    kind: str
    id: str
    decision: str
    applied: bool
    determining: bool
    why: str
    """What it did (applied) or the first thing that failed, with the value seen."""
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "decision": self.decision, "applied": self.applied,
                "determining": self.determining, "why": self.why, "line": self.line}


@dataclass(slots=True)
class Explanation:
    """The decision on an intent and every entry of the policy beside it."""

    decision: Decision
    entries: list[Entry] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = self.decision
        factors = [{"name": f.name, "contribution": f.contribution, "detail": f.detail}
                   for f in d.risk.factors]
        return {"decision": d.decision.value, "determining": list(d.determining), "rules": list(d.rules),
                "reasons": list(d.reasons), "risk": {"score": d.risk.score, "factors": factors},
                "policy": d.policy_name, "policy_version": d.policy_version,
                "entries": [entry.to_dict() for entry in self.entries]}

    def render(self) -> str:
        """The readable form: one line per entry, then the decision."""
        out = []
        for entry in self.entries:
            mark = "*" if entry.determining else ("+" if entry.applied else "-")
            where = f" (line {entry.line})" if entry.line else ""
            verdict = f" [{entry.decision}]" if entry.decision else ""
            out.append(f"{mark} {entry.kind} {entry.id}{where}{verdict}: {entry.why}")
        d = self.decision
        out.append(f"=> {d.decision.value}, determined by {', '.join(d.determining) or 'nothing'}; "
                   f"risk {d.risk.score:.2f}; policy {d.policy_name} {d.policy_version}")
        out += [f"   reason: {reason}" for reason in d.reasons]
        return "\n".join(out)


def explain(policy: CompiledPolicy, intent: Intent, state: StateStore | None = None,
            lines: Lines | None = None) -> Explanation:
    """Explain the decision ``policy`` makes on ``intent`` with ``state`` (default: none yet, as for a
    first intent). ``lines`` (from :func:`streams.engine.loader.parse_yaml`) put each entry on its line."""
    state = state if state is not None else InMemoryState()
    result = evaluate_intent(policy, state, intent)
    decision = result.decision
    applied = {entry.id: entry for entry in result.applied}
    determining = set(decision.determining)
    doc = policy.document
    found = Explanation(decision)

    def line(*loc: str | int) -> int | None:
        return line_of(loc, lines) if lines is not None else None

    def add(kind: str, entry_id: str, verdict: str, why: str, loc: tuple[str | int, ...]) -> None:
        hit = applied.get(entry_id)
        found.entries.append(Entry(kind, entry_id, verdict, hit is not None, entry_id in determining,
                                   hit.reason if hit is not None else why, line(*loc)))

    for index, rule in enumerate(doc.rules):
        why = _failure(rule.match, rule.when, intent, doc.schedules) or "matched"
        add("rule", rule.id, rule.decision.value, why, ("rules", index))
    for index, (spec, limit) in enumerate(zip(doc.limits, policy.limits, strict=True)):
        why = _failure(spec.match, spec.when, intent, doc.schedules) or _usage(limit, intent, state)
        add("limit", limit.id, limit.decision.value, why, ("limits", index))
    for index, sequence in enumerate(getattr(doc, "sequences", [])):
        add("sequence", sequence.id, sequence.decision.value,
            _failure(sequence.match, sequence.when, intent, doc.schedules) or "no earlier action it names",
            ("sequences", index))
    _risk(policy, decision, found, intent, state)
    used = not any(entry.applied for entry in found.entries if entry.kind == "rule")
    found.entries.append(Entry(
        "default", "default", doc.default.value, used, "default" in determining,
        f"no rule applied: the default is {doc.default.value}" if used else "a rule applied",
        line("default")))
    return found


def _failure(match: Match, when: Any, intent: Intent, schedules: dict[str, Schedule]) -> str | None:
    """The first part of ``match`` then ``when`` that fails for ``intent`` (None: everything holds)."""
    for name in _MATCH_FIELDS:
        expected = getattr(match, name)
        if expected is None:
            continue
        seen = intent.action.value if name == "action" else getattr(intent, name)
        options = [expected] if not isinstance(expected, list) else expected
        options = [getattr(option, "value", option) for option in options]
        if not (glob_matcher(options)(seen) if name in ("tool", "target") else seen in options):
            return f"match.{name}: {seen!r} is not {' or '.join(repr(o) for o in options)}"
    return None if when is None else _condition(when, intent, schedules)


def _condition(cond: Any, intent: Intent, schedules: dict[str, Schedule]) -> str | None:
    """Why ``cond`` does not hold for ``intent`` (None: it holds)."""
    if isinstance(cond, Comparison):
        described = f"{cond.field} {cond.op} {cond.value!r}"
        try:
            if compile_comparison(cond)(intent):
                return None
        except ConditionError as exc:
            return f"{described}: cannot be evaluated ({exc})"
        value = field_getter(cond.field)(intent)
        return f"{described} failed: value seen {'(missing)' if value is MISSING else repr(value)}"
    if isinstance(cond, AllCondition):
        return next((why for sub in cond.all if (why := _condition(sub, intent, schedules))), None)
    if isinstance(cond, AnyCondition):
        failures = [_condition(sub, intent, schedules) for sub in cond.any]
        if any(why is None for why in failures):
            return None
        return "none of any: " + "; ".join(str(why) for why in failures)
    if isinstance(cond, NotCondition):
        inner = _condition(cond.not_, intent, schedules)
        return None if inner is not None else f"not: {_describe(cond.not_)} holds"
    if isinstance(cond, ScheduleCondition):
        schedule = schedules[cond.schedule]
        if compile_schedule(schedule)(intent):
            return None
        local = intent.occurred_at.astimezone(compile_zone(schedule))
        return (f"schedule {cond.schedule}: {local:%a %H:%M} {schedule.timezone} is outside "
                f"{','.join(schedule.days)} {schedule.start}-{schedule.end}")
    return f"unknown condition {cond!r}"


def compile_zone(schedule: Schedule) -> Any:
    """A schedule's time zone."""
    import zoneinfo
    from datetime import UTC

    return UTC if schedule.timezone == "UTC" else zoneinfo.ZoneInfo(schedule.timezone)


def _describe(cond: Any) -> str:
    if isinstance(cond, Comparison):
        return f"{cond.field} {cond.op} {cond.value!r}"
    if isinstance(cond, ScheduleCondition):
        return f"schedule {cond.schedule}"
    return type(cond).__name__.removesuffix("Condition").lower()


def _usage(limit: CompiledLimit, intent: Intent, state: StateStore) -> str:
    """How full the limit's window is with this action, when it was not exceeded."""
    key = limit.key_of(intent)
    window = state.get_window(key)
    at_ms = intent.occurred_at_ms
    if limit.count is not None:
        used = window.peak_count(at_ms, limit.window_ms) if window is not None else 0
        return f"{used} of {limit.count} already in {limit.window} at {key}: this one fits"
    value = limit.sum_of(intent) if limit.sum_of is not None else None
    total = window.peak_total(at_ms, limit.window_ms, 0.0) if window is not None else 0.0
    return f"{total:g} of {limit.max:g} already in {limit.window} at {key}, this one adds {value!r}: fits"


def _risk(policy: CompiledPolicy, decision: Decision, found: Explanation, intent: Intent,
          state: StateStore) -> None:
    """Every configured risk factor (its contribution, or why it is 0) and threshold."""
    model = policy.document.risk
    if model is None:
        return
    seen = {factor.name: factor for factor in decision.risk.factors}
    configured = [("action_type", "this action has no weight")] if model.action_weights else []
    if model.target_sensitivity:
        configured.append(("target_sensitivity", "the target matches no sensitive glob"))
    configured += [(f"magnitude:{m.field}", f"{m.field} is missing, not a number or not above 0")
                   for m in model.magnitude]
    history = model.history
    if history is not None:
        past = state.get_history(history_key(intent.agent_id, intent.tool))
        known = past.observations if past is not None else 0
        quiet = (f"not unusual for this agent and tool ({known} observations)"
                 if known >= history.min_observations else
                 f"{known} of the {history.min_observations} observations of this agent and tool it needs")
        configured += [(name, quiet) for name, spec in (
            ("amount_deviation", history.amount), ("new_target", history.new_target),
            ("unusual_hour", history.unusual_hour), ("burst", history.burst)) if spec is not None]
    for name, why in configured:
        factor = seen.get(name)
        detail = f"+{factor.contribution:.2f}: {factor.detail}" if factor is not None else f"0: {why}"
        found.entries.append(Entry("risk factor", name, "", factor is not None, False, detail))
    score = decision.risk.score
    for threshold in sorted(model.thresholds, key=lambda t: -t.at_least):
        name = f"risk>={threshold.at_least:g}"
        reached = score >= threshold.at_least
        why = f"score {score:.2f} {'>=' if reached else '<'} {threshold.at_least:g}"
        found.entries.append(Entry("risk threshold", name, threshold.decision.value,
                                   name in decision.rules, name in decision.determining, why))
