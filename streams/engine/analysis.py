"""Static analysis of a valid policy: entries that can never matter, each reported on its line.

``sluicegate policy check`` prints these as warnings (``--strict`` makes them errors):

- ``never-applies``: a rule or limit whose ``match`` and ``when`` together no intent can satisfy (an
  empty ``match`` list; two conditions on one field that exclude each other, such as ``eq: a`` and
  ``eq: b``, ``gt: 10`` and ``lt: 5``, a value outside an ``in`` list, or a ``glob`` none of the
  field's allowed values fits). Only the conditions every intent must meet are compared: those of
  ``match`` and of a ``when`` made of ``all`` (and ``not`` of one comparison); ``any`` and schedules
  are left alone, and so is a comparison with a ``default``.
- ``covered-allow``: an ALLOW rule every intent of which also matches an unconditional BLOCK rule (or
  one whose conditions are among its own): BLOCK wins, so it never decides anything.
- ``limit-never-counts``: with ``default: BLOCK``, a limit whose ``match`` no ALLOW or
  REQUIRE_APPROVAL rule can overlap: nothing it matches is ever allowed, so it counts nothing.
- ``unknown-reviewer-group``: a REQUIRE_APPROVAL entry (or default) whose approver group is missing
  from the reviewers file, or has nobody in it: every such request would expire.

The analysis is conservative: it reports only what it can show, never a guess.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from schemas.common import DecisionKind
from schemas.policy import (
    AllCondition,
    Approval,
    Comparison,
    Limit,
    Loc,
    Match,
    NotCondition,
    PolicyDocument,
    Rule,
    compile_regex,
)
from streams.engine.loader import Lines, line_of, load_document, parse_yaml

_WILD = set("*?[")
_NEGATED = {"eq": "ne", "ne": "eq", "in": "not_in", "not_in": "in", "lt": "gte", "gte": "lt", "gt": "lte",
            "lte": "gt"}
_MATCH_FIELDS = ("tool", "action", "target", "environment", "agent_role", "agent_id")


@dataclass(frozen=True, slots=True)
class Finding:
    """One warning: where, which kind (``code``) and why."""

    source: str
    line: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: warning: {self.message} [{self.code}]"


def analyse(text: str, source: str = "<policy>", groups: Collection[str] | None = None) -> list[Finding]:
    """Every finding of a policy's YAML text, by line. ``groups``: the reviewer groups that have members
    (None: not checked). Raises :class:`PolicyError` when the policy is not valid."""
    doc = load_document(text, source)
    _, lines = parse_yaml(text, source)
    findings = _Analysis(doc, lines, source).run(groups)
    return sorted(findings, key=lambda f: (f.line, f.code, f.message))


def _key(value: Any) -> tuple[str, Any]:
    """A value as the engine compares it: booleans apart from numbers, 1 equal to 1.0."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    if value is None:
        return ("null", None)
    return ("string", value)


def _has_wildcard(pattern: str) -> bool:
    return bool(set(pattern) & _WILD)


def _as_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) or not isinstance(value, list) else list(value)


@dataclass(slots=True)
class _Field:
    """What the conjunction so far allows for one field."""

    allowed: set[tuple[str, Any]] | None = None
    excluded: set[tuple[str, Any]] = field(default_factory=set)
    low: tuple[float, bool] = (-math.inf, False)
    high: tuple[float, bool] = (math.inf, False)
    globs: list[str] = field(default_factory=list)
    regexes: list[str] = field(default_factory=list)
    present: bool | None = None
    conflict: bool = False
    seen: list[str] = field(default_factory=list)

    def add(self, op: str, value: Any) -> None:
        if op in ("eq", "in"):
            keys = {_key(v) for v in (value if op == "in" else [value])}
            self.allowed = keys if self.allowed is None else self.allowed & keys
        elif op in ("ne", "not_in"):
            self.excluded |= {_key(v) for v in (value if op == "not_in" else [value])}
        elif op in ("gt", "gte"):
            self.low = max(self.low, (float(value), op == "gt"))
        elif op in ("lt", "lte"):
            self.high = min(self.high, (float(value), op == "lt"), key=lambda b: (b[0], not b[1]))
        elif op == "glob":
            self.globs.append(value)
        elif op == "regex":
            self.regexes.append(value)
        elif op == "exists":
            self.conflict = self.conflict or self.present not in (None, bool(value))
            self.present = bool(value)
        self.seen.append(f"{op} {value!r}")

    def satisfiable(self) -> bool:
        """Some value meets every constraint (a comparison on a missing field errors: never applies)."""
        compared = any(not entry.startswith("exists") for entry in self.seen)
        if self.conflict or (self.present is False and compared):
            return False
        low, high = self.low, self.high
        if low[0] > high[0] or (low[0] == high[0] and (low[1] or high[1])):
            return False
        if self.allowed is None:
            return True
        return any(self._fits(kind, value) for kind, value in self.allowed - self.excluded)

    def _fits(self, kind: str, value: Any) -> bool:
        bounded = self.low[0] > -math.inf or self.high[0] < math.inf
        if bounded and (kind != "number" or not self._inside(value)):
            return False
        if (self.globs or self.regexes) and kind != "string":
            return False
        return all(fnmatch.fnmatchcase(value, g) for g in self.globs) and all(
            compile_regex(r).search(value) is not None for r in self.regexes)

    def _inside(self, value: float) -> bool:
        (low, open_low), (high, open_high) = self.low, self.high
        return (value > low if open_low else value >= low) and (value < high if open_high else value <= high)


def _conjuncts(cond: Any, loc: Loc) -> Iterator[tuple[str, str, Any, Loc]]:
    """The (field, op, value, location) every intent must meet for ``cond`` to hold."""
    if isinstance(cond, Comparison):
        if "default" not in cond.model_fields_set:
            yield cond.field, cond.op, cond.value, loc
    elif isinstance(cond, AllCondition):
        for index, sub in enumerate(cond.all):
            yield from _conjuncts(sub, (*loc, "all", index))
    elif isinstance(cond, NotCondition) and isinstance(cond.not_, Comparison):
        inner = cond.not_
        if "default" not in inner.model_fields_set and (inner.op in _NEGATED or inner.op == "exists"):
            op = _NEGATED.get(inner.op, inner.op)
            yield inner.field, op, (not inner.value) if inner.op == "exists" else inner.value, (*loc, "not")


def _match_conjuncts(match: Match, loc: Loc) -> Iterator[tuple[str, str, Any, Loc]]:
    for name in _MATCH_FIELDS:
        values = _as_list(getattr(match, name))
        if values is None:
            continue
        values = [getattr(v, "value", v) for v in values]
        if name in ("tool", "target") and any(_has_wildcard(v) for v in values):
            if len(values) == 1:
                yield name, "glob", values[0], (*loc, name)
            continue
        yield name, "in", values, (*loc, name)


def _glob_covers(outer: str, inner: str) -> bool:
    """Every string ``inner`` matches, ``outer`` matches too (shown conservatively)."""
    if outer == inner or outer == "*":
        return True
    if not _has_wildcard(inner):
        return fnmatch.fnmatchcase(inner, outer)
    head = outer[:-1]
    return outer.endswith("*") and not _has_wildcard(head) and inner.startswith(head)


def _glob_overlap(left: str, right: str) -> bool:
    """Some string may match both (True unless shown otherwise)."""
    if not _has_wildcard(left):
        return fnmatch.fnmatchcase(left, right)
    if not _has_wildcard(right):
        return fnmatch.fnmatchcase(right, left)
    return True


def _values(match: Match, name: str) -> list[str] | None:
    values = _as_list(getattr(match, name))
    return None if values is None else [getattr(v, "value", v) for v in values]


def _covers(outer: Match, inner: Match) -> bool:
    """Every intent ``inner`` matches, ``outer`` matches."""
    for name in _MATCH_FIELDS:
        wide, narrow = _values(outer, name), _values(inner, name)
        if wide is None:
            continue
        if narrow is None:
            return False
        if name in ("tool", "target"):
            if not all(any(_glob_covers(w, n) for w in wide) for n in narrow):
                return False
        elif not set(narrow) <= set(wide):
            return False
    return True


def _overlap(left: Match, right: Match) -> bool:
    """Some intent may match both."""
    for name in _MATCH_FIELDS:
        one, two = _values(left, name), _values(right, name)
        if one is None or two is None:
            continue
        if name in ("tool", "target"):
            if not any(_glob_overlap(a, b) for a in one for b in two):
                return False
        elif not set(one) & set(two):
            return False
    return True


def _when_parts(cond: Any) -> list[Any]:
    if cond is None:
        return []
    return list(cond.all) if isinstance(cond, AllCondition) else [cond]


class _Analysis:
    def __init__(self, doc: PolicyDocument, lines: Lines, source: str) -> None:
        self.doc, self.lines, self.source = doc, lines, source
        self.findings: list[Finding] = []

    def _add(self, loc: Loc, code: str, message: str) -> None:
        self.findings.append(Finding(self.source, line_of(loc, self.lines), code, message))

    def run(self, groups: Collection[str] | None) -> list[Finding]:
        entries: list[tuple[str, int, Rule | Limit]] = [("rules", i, r) for i, r in enumerate(self.doc.rules)]
        entries += [("limits", i, lim) for i, lim in enumerate(self.doc.limits)]
        dead = {(section, index) for section, index, entry in entries
                if self._never_applies(section, index, entry)}
        live_rules = [(i, r) for i, r in enumerate(self.doc.rules) if ("rules", i) not in dead]
        self._covered(live_rules)
        if self.doc.default is DecisionKind.BLOCK:
            self._uncounted(live_rules, dead)
        if groups is not None:
            self._groups(set(groups))
        return self.findings

    def _never_applies(self, section: str, index: int, entry: Rule | Limit) -> bool:
        kind = "rule" if section == "rules" else "limit"
        for name in _MATCH_FIELDS:
            value = getattr(entry.match, name)
            if isinstance(value, list) and not value:
                self._add((section, index, "match", name), "never-applies",
                          f"{kind} {entry.id} can never apply: match.{name} is an empty list")
                return True
        fields: dict[str, _Field] = {}
        parts = [*_match_conjuncts(entry.match, (section, index, "match"))]
        if entry.when is not None:
            parts += _conjuncts(entry.when, (section, index, "when"))
        for name, op, value, loc in parts:
            state = fields.setdefault(name, _Field())
            before = list(state.seen)
            state.add(op, value)
            if not state.satisfiable():
                earlier = ", ".join(before) or "an earlier condition"
                self._add(loc, "never-applies", f"{kind} {entry.id} can never apply: {name} {op} {value!r} "
                                                f"contradicts {name} {earlier}")
                return True
        return False

    def _covered(self, rules: list[tuple[int, Rule]]) -> None:
        blocks = [(i, r) for i, r in rules if r.decision is DecisionKind.BLOCK]
        for index, rule in rules:
            if rule.decision is not DecisionKind.ALLOW:
                continue
            mine = _when_parts(rule.when)
            for block_index, block in blocks:
                theirs = _when_parts(block.when)
                if _covers(block.match, rule.match) and all(part in mine for part in theirs):
                    line = line_of(("rules", block_index), self.lines)
                    self._add(("rules", index), "covered-allow",
                              f"ALLOW rule {rule.id} never decides anything: every intent it applies to "
                              f"also matches BLOCK rule {block.id} (line {line}), and BLOCK wins")
                    break

    def _uncounted(self, rules: list[tuple[int, Rule]], dead: set[tuple[str, int]]) -> None:
        granting = [r for _, r in rules if r.decision is not DecisionKind.BLOCK]
        for index, limit in enumerate(self.doc.limits):
            if ("limits", index) in dead or any(_overlap(rule.match, limit.match) for rule in granting):
                continue
            self._add(("limits", index), "limit-never-counts",
                      f"limit {limit.id} never counts anything: no ALLOW or REQUIRE_APPROVAL rule matches "
                      "what it matches, and the default is BLOCK")

    def _groups(self, groups: set[str]) -> None:
        default = Approval().group
        asking: list[tuple[Loc, str, Approval | None]] = []
        sections: list[tuple[str, list[Any]]] = [("rules", self.doc.rules), ("limits", self.doc.limits),
                                                 ("sequences", list(getattr(self.doc, "sequences", [])))]
        for section, entries in sections:
            for index, entry in enumerate(entries):
                if entry.decision is DecisionKind.REQUIRE_APPROVAL:
                    asking.append(((section, index), f"{section[:-1]} {entry.id}", entry.approval))
        if self.doc.risk is not None:
            for index, threshold in enumerate(self.doc.risk.thresholds):
                if threshold.decision is DecisionKind.REQUIRE_APPROVAL:
                    asking.append((("risk", "thresholds", index), f"risk threshold {threshold.at_least:g}",
                                   threshold.approval))
        if self.doc.default is DecisionKind.REQUIRE_APPROVAL:
            asking.append((("default",), "the default", None))
        for loc, what, approval in asking:
            group = approval.group if approval is not None else default
            if group not in groups:
                where = (*loc, "approval", "group") if approval is not None else loc
                self._add(where, "unknown-reviewer-group",
                          f"{what} asks group {group!r} for approval, which the reviewers file lacks "
                          "(or lists nobody in): every such request would expire")
