"""Compile a validated policy document once: closures for conditions, an index by tool and action."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Generic, NamedTuple, TypeVar

from schemas.common import Action, DecisionKind
from schemas.intent import Intent
from schemas.policy import Approval, Limit, PolicyDocument, Rule, Sequence, duration_ms
from streams.engine.build import Applied as Applied
from streams.engine.conditions import CompiledMatch, Getter, Pred, compile_condition, field_getter
from streams.engine.errors import PolicyError, PolicyIssue
from streams.engine.keys import key_builder, sequence_key_builder
from streams.engine.loader import load_document
from streams.engine.risk import CompiledRisk

_CACHE_LIMIT = 65_536


class LimitScope(StrEnum):
    """Where a limit's window state lives when intents are partitioned by agent id.

    AGENT: the key includes ``agent``, so the state is on the agent's partition. SHARED: keyed by
    fleet, tool, target or role only; the state must be kept where that key is owned.
    """

    AGENT = "agent"
    SHARED = "shared"


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready to evaluate; ``order`` is its position in the policy."""

    order: int
    id: str
    decision: DecisionKind
    applied: Applied
    match: CompiledMatch
    rest: Pred | None
    when: Pred | None
    approval: Approval | None


@dataclass(frozen=True, slots=True)
class CompiledLimit:
    """A windowed limit ready to evaluate; ``order`` follows the rules'."""

    order: int
    id: str
    decision: DecisionKind
    match: CompiledMatch
    rest: Pred | None
    when: Pred | None
    names: tuple[str, ...]
    key_of: Callable[[Intent], str]
    agent_prefix: str | None
    scope: LimitScope
    window: str
    window_ms: int
    count: int | None
    sum_field: str | None
    sum_of: Getter | None
    max: float | None
    keep: int | None
    approval: Approval | None


@dataclass(frozen=True, slots=True)
class CompiledSequence:
    """A sequence rule ready to evaluate; ``order`` follows the limits'. ``match``/``rest``/``when``
    select the later action, ``after`` the earlier one."""

    order: int
    id: str
    decision: DecisionKind
    description: str
    match: CompiledMatch
    rest: Pred | None
    when: Pred | None
    key_of: Callable[[Intent], str]
    within: str
    within_ms: int
    counts: frozenset[DecisionKind]
    after: CompiledTrigger
    approval: Approval | None


@dataclass(frozen=True, slots=True)
class CompiledTrigger:
    """The earlier action of a sequence rule (indexed on its own match)."""

    order: int
    id: str
    match: CompiledMatch
    rest: Pred | None
    when: Pred | None


class Plan(NamedTuple):
    """What to check for one (tool, action), in policy order: candidate rules and limits, sequence
    rules whose later action it could be and those whose earlier action it could be."""

    rules: tuple[CompiledRule, ...]
    limits: tuple[CompiledLimit, ...]
    sequences: tuple[CompiledSequence, ...] = ()
    triggers: tuple[CompiledSequence, ...] = ()


E = TypeVar("E", CompiledRule, CompiledLimit, CompiledSequence, CompiledTrigger)


@dataclass(slots=True)
class _Index(Generic[E]):
    """Entries by exact tool name, plus a fallback list (globs or no tool)."""

    exact: dict[str, list[E]] = field(default_factory=dict)
    fallback: list[E] = field(default_factory=list)

    def add(self, entry: E) -> None:
        patterns = entry.match.tool_patterns
        if patterns is not None and not any(set(p) & set("*?[") for p in patterns):
            for pattern in dict.fromkeys(patterns):
                self.exact.setdefault(pattern, []).append(entry)
        else:
            self.fallback.append(entry)

    def lookup(self, tool: str, action: Action) -> tuple[E, ...]:
        pool = self.exact.get(tool, []) + [e for e in self.fallback if e.match.tool_matches(tool)]
        return tuple(sorted(
            (e for e in pool if e.match.actions is None or action in e.match.actions), key=lambda e: e.order,
        ))


class CompiledPolicy:
    """A validated, compiled policy. Immutable after construction; safe to share."""

    def __init__(self, doc: PolicyDocument, source: str) -> None:
        self.document = doc
        self.source = source
        self.name = doc.policy
        self.default = doc.default
        self.version = _version(doc)
        self.default_reason = f"default: no rule applied ({doc.default.value})"
        self.rules = tuple(_rule(index, rule, doc) for index, rule in enumerate(doc.rules))
        self.rule_count = len(self.rules)
        self.limits = tuple(
            _limit(len(doc.rules) + index, limit, doc) for index, limit in enumerate(doc.limits)
        )
        self.has_fleet_limits = any(limit.scope is LimitScope.SHARED for limit in self.limits)
        """True when some limit is not keyed by agent (fleet, tool, target or role)."""
        first = len(doc.rules) + len(doc.limits)
        self.sequences = tuple(_sequence(first + index, seq, doc) for index, seq in enumerate(doc.sequences))
        self.risk_order = first + len(doc.sequences)
        self.risk = CompiledRisk.of(doc.risk, self.risk_order) if doc.risk is not None else None
        self._rule_index: _Index[CompiledRule] = _Index()
        self._limit_index: _Index[CompiledLimit] = _Index()
        for rule in self.rules:
            self._rule_index.add(rule)
        for limit in self.limits:
            self._limit_index.add(limit)
        self._sequence_index: _Index[CompiledSequence] = _Index()
        self._trigger_index: _Index[CompiledTrigger] = _Index()
        self._by_id = {seq.id: seq for seq in self.sequences}
        for seq in self.sequences:
            self._sequence_index.add(seq)
            self._trigger_index.add(seq.after)
        self.plans: dict[tuple[str, str], Plan] = {}
        """Memo of :meth:`plan` by (tool, action value); read directly on the hot path."""
        self._approvals: dict[str, Approval] = {}
        entries = [(rule.id, rule.decision, rule.approval) for rule in self.rules]
        entries += [(limit.id, limit.decision, limit.approval) for limit in self.limits]
        entries += [(seq.id, seq.decision, seq.approval) for seq in self.sequences]
        if doc.risk is not None:
            entries += [(f"risk>={t.at_least:g}", t.decision, t.approval) for t in doc.risk.thresholds]
        for entry_id, decision, approval in entries:
            if approval is not None and decision is DecisionKind.REQUIRE_APPROVAL:
                self._approvals.setdefault(entry_id, approval)

    def rules_for(self, tool: str, action: Action) -> tuple[CompiledRule, ...]:
        """Rules whose tool and action match, in policy order."""
        return self.plan(tool, action).rules

    def limits_for(self, tool: str, action: Action) -> tuple[CompiledLimit, ...]:
        """Limits whose tool and action match, in policy order."""
        return self.plan(tool, action).limits

    def plan(self, tool: str, action: Action) -> Plan:
        """The candidate rules and limits for a tool and action (memoised; the hot path's one lookup)."""
        found = self.plans.get((tool, action._value_))
        if found is None:
            if len(self.plans) >= _CACHE_LIMIT:
                self.plans.clear()
            triggers = tuple(self._by_id[t.id] for t in self._trigger_index.lookup(tool, action))
            found = self.plans[(tool, action._value_)] = Plan(
                self._rule_index.lookup(tool, action), self._limit_index.lookup(tool, action),
                self._sequence_index.lookup(tool, action), triggers,
            )
        return found

    def approval_for(self, rule_ids: tuple[str, ...]) -> Approval:
        """Approval settings for a REQUIRE_APPROVAL decision whose ``rules`` are ``rule_ids``.

        The first id (in the decision's order: rules, limits, then the risk threshold ``risk>=X``)
        naming a REQUIRE_APPROVAL entry that has an ``approval`` block gives it; else the defaults.
        """
        for rule_id in rule_ids:
            approval = self._approvals.get(rule_id)
            if approval is not None:
                return approval
        return Approval()

    def __repr__(self) -> str:
        return f"CompiledPolicy({self.name!r}, {self.version}, {self.rule_count} rules)"


def _version(doc: PolicyDocument) -> str:
    """``sha256:`` and 16 hex digits of the canonical content (sorted JSON, defaults filled in).

    An absent ``approval`` of a limit or threshold and an empty ``sequences`` are left out, so the
    versions of policies written before those existed did not change.
    """
    content = doc.model_dump(mode="json", by_alias=True)
    if not content["sequences"]:
        del content["sequences"]
    entries = [*content["limits"], *(content["risk"] or {}).get("thresholds", [])]
    for entry in entries:
        if entry.get("approval") is None:
            entry.pop("approval", None)
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _when(entry: Rule | Limit | Sequence, doc: PolicyDocument) -> Pred | None:
    return None if entry.when is None else compile_condition(entry.when, doc.schedules)


def _rule(order: int, rule: Rule, doc: PolicyDocument) -> CompiledRule:
    reason = f"{rule.id}: {rule.description.strip() or rule.decision.value}"
    match = CompiledMatch.of(rule.match)
    return CompiledRule(order, rule.id, rule.decision, Applied(order, rule.id, rule.decision, reason),
                        match, match.rest, _when(rule, doc), rule.approval)


def _limit(order: int, limit: Limit, doc: PolicyDocument) -> CompiledLimit:
    names = limit.keys
    scope = LimitScope.AGENT if "agent" in names else LimitScope.SHARED
    match = CompiledMatch.of(limit.match)
    return CompiledLimit(
        order=order, id=limit.id, decision=limit.decision, match=match, rest=match.rest,
        when=_when(limit, doc), names=names, key_of=key_builder(limit.id, names),
        agent_prefix=f"{limit.id}|agent=" if names == ("agent",) else None, scope=scope,
        window=limit.window,
        window_ms=duration_ms(limit.window), count=limit.count, sum_field=limit.sum,
        sum_of=None if limit.sum is None else field_getter(limit.sum), max=limit.max,
        keep=2 * limit.count if limit.count is not None else None, approval=limit.approval,
    )


def _sequence(order: int, seq: Sequence, doc: PolicyDocument) -> CompiledSequence:
    match, after = CompiledMatch.of(seq.match), CompiledMatch.of(seq.after.match)
    trigger_when = None if seq.after.when is None else compile_condition(seq.after.when, doc.schedules)
    return CompiledSequence(
        order=order, id=seq.id, decision=seq.decision, description=seq.description.strip(), match=match,
        rest=match.rest, when=_when(seq, doc), key_of=sequence_key_builder(seq.id, seq.keys),
        within=seq.within, within_ms=duration_ms(seq.within), counts=seq.after.counts,
        after=CompiledTrigger(order, seq.id, after, after.rest, trigger_when), approval=seq.approval,
    )


def compile_policy(text: str, source: str = "<policy>") -> CompiledPolicy:
    """Validate and compile the YAML text of a policy; raises PolicyError listing every issue."""
    return CompiledPolicy(load_document(text, source), source)


def load_policy(path: str | Path) -> CompiledPolicy:
    """Read, validate and compile a policy file; raises PolicyError (unreadable files included)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([PolicyIssue(str(path), 1, f"cannot read the policy: {exc}")]) from None
    return compile_policy(text, str(path))
