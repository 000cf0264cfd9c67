"""Compile ``match`` blocks and conditions into small closures over an :class:`~schemas.Intent`.

A compiled condition returns a bool or raises :class:`ConditionError` (missing field, wrong type);
the evaluator turns that error into a BLOCK naming the rule.
"""

from __future__ import annotations

import fnmatch
import operator
import re
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from schemas.common import Action
from schemas.intent import Intent
from schemas.policy import (
    DAYS,
    AllCondition,
    AnyCondition,
    Comparison,
    Match,
    NotCondition,
    Schedule,
    ScheduleCondition,
    compile_regex,
    minutes_of,
)
from streams.engine.errors import ConditionError

Pred = Callable[[Intent], bool]
Getter = Callable[[Intent], Any]
MISSING: Any = object()
"""Returned by a getter when the field is absent."""

_NUMERIC = {"lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge}


def _compile_glob(patterns: str | Sequence[str]) -> str | Callable[[str], re.Match[str] | None]:
    """A glob or list of globs (fnmatch syntax, case-sensitive): the literal string when it has no
    wildcard, else the ``match`` of one compiled regex."""
    items = [patterns] if isinstance(patterns, str) else list(patterns)
    if len(items) == 1 and not set(items[0]) & set("*?["):
        return items[0]
    return re.compile("|".join(f"(?:{fnmatch.translate(item)})" for item in items)).match


def glob_matcher(patterns: str | Sequence[str]) -> Callable[[str], bool]:
    """A predicate on strings for a glob or a list of globs."""
    glob = _compile_glob(patterns)
    if isinstance(glob, str):
        return lambda value: value == glob
    return lambda value: glob(value) is not None


def target_predicate(patterns: str | Sequence[str]) -> Pred:
    """``glob_matcher`` applied to the intent's target, as one closure."""
    glob = _compile_glob(patterns)
    if isinstance(glob, str):
        return lambda intent: intent.target == glob
    return lambda intent: glob(intent.target) is not None


def field_getter(path: str) -> Getter:
    """Read a field (``params.<path>``, ``labels.<name>`` or a top-level intent field)."""
    head, _, rest = path.partition(".")
    if head == "params":
        keys = rest.split(".")
        if len(keys) == 1:
            key = keys[0]
            return lambda intent: intent.params.get(key, MISSING)
        return lambda intent: _dig(intent.params, keys)
    if head == "labels":
        return lambda intent: intent.labels.get(rest, MISSING)
    if head == "action":
        return lambda intent: intent.action.value
    return operator.attrgetter(head)


def _dig(value: Any, keys: list[str]) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return MISSING
        value = value.get(key, MISSING)
        if value is MISSING:
            return MISSING
    return value


def is_number(value: Any) -> bool:
    """A JSON number: int or float, not bool."""
    return value.__class__ is not bool and isinstance(value, int | float)


def _same(left: Any, right: Any) -> bool:
    return bool(left == right) and (left.__class__ is bool) == (right.__class__ is bool)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def param_key(path: str) -> str | None:
    """The key of a one-level ``params.<key>`` path (read inline on the hot path), else None."""
    head, _, rest = path.partition(".")
    return rest if head == "params" and "." not in rest else None


def compile_comparison(cond: Comparison) -> Pred:
    """A comparison as one closure; a missing field without ``default`` raises ConditionError.

    A one-level ``params.<key>`` field is read inline (no getter call): these closures run for every
    candidate rule of every intent.
    """
    get, field, op, expected = field_getter(cond.field), cond.field, cond.op, cond.value
    key = param_key(field)
    if op == "exists":
        return lambda intent: (get(intent) is not MISSING) is expected
    has_default, default = "default" in cond.model_fields_set, cond.default

    def absent() -> Any:
        if not has_default:
            raise ConditionError(f"{field} is missing")
        return default

    if op in _NUMERIC:
        compare = _NUMERIC[op]

        def numeric(intent: Intent) -> bool:
            value = intent.params.get(key, MISSING) if key is not None else get(intent)
            if value is MISSING:
                value = absent()
            kind = value.__class__
            if kind is not int and kind is not float and (kind is bool or not isinstance(value, int | float)):
                raise ConditionError(f"{field} is {_type_name(value)}, not a number")
            return compare(value, expected)  # type: ignore[no-any-return]

        return numeric
    if op in ("eq", "ne", "in", "not_in"):
        options = (expected,) if op in ("eq", "ne") else tuple(expected)
        strings = frozenset(option for option in options if isinstance(option, str))
        want = op in ("eq", "in")

        def member(intent: Intent) -> bool:
            value = intent.params.get(key, MISSING) if key is not None else get(intent)
            if value is MISSING:
                value = absent()
            if value.__class__ is str:
                return (value in strings) is want
            return _member(value, options) is want

        return member
    test = glob_matcher(expected) if op == "glob" else _regex(expected)

    def textual(intent: Intent) -> bool:
        value = intent.params.get(key, MISSING) if key is not None else get(intent)
        if value is MISSING:
            value = absent()
        if not isinstance(value, str):
            raise ConditionError(f"{field} is {_type_name(value)}, not a string")
        return test(value)

    return textual


def _regex(pattern: str) -> Callable[[str], bool]:
    search = compile_regex(pattern).search  # RE2: linear in the input, never backtracks
    return lambda value: search(value) is not None


def _member(value: Any, options: tuple[Any, ...]) -> bool:
    return any(_same(value, option) for option in options)


def compile_schedule(schedule: Schedule) -> Pred:
    """True when ``occurred_at`` falls on one of the days, in ``[start, end)`` local time."""
    zone = UTC if schedule.timezone == "UTC" else zoneinfo.ZoneInfo(schedule.timezone)
    days = frozenset(DAYS.index(day) for day in schedule.days)
    start, end = minutes_of(schedule.start), minutes_of(schedule.end)

    def inside(intent: Intent) -> bool:
        local = intent.occurred_at.astimezone(zone)
        return local.weekday() in days and start <= local.hour * 60 + local.minute < end

    return inside


def compile_condition(cond: Any, schedules: dict[str, Schedule]) -> Pred:
    """Any condition node as a closure."""
    if isinstance(cond, Comparison):
        return compile_comparison(cond)
    if isinstance(cond, ScheduleCondition):
        return compile_schedule(schedules[cond.schedule])
    if isinstance(cond, NotCondition):
        inner = compile_condition(cond.not_, schedules)
        return lambda intent: not inner(intent)
    if isinstance(cond, AllCondition | AnyCondition):
        subs = tuple(compile_condition(sub, schedules) for sub in (
            cond.all if isinstance(cond, AllCondition) else cond.any))
        return _all(subs) if isinstance(cond, AllCondition) else _any(subs)
    raise TypeError(f"not a condition: {cond!r}")


def _all(subs: tuple[Pred, ...]) -> Pred:
    if len(subs) == 1:
        return subs[0]
    if len(subs) == 2:
        first, second = subs
        return lambda intent: first(intent) and second(intent)
    return lambda intent: all(pred(intent) for pred in subs)


def _any(subs: tuple[Pred, ...]) -> Pred:
    if len(subs) == 1:
        return subs[0]
    if len(subs) == 2:
        first, second = subs
        return lambda intent: first(intent) or second(intent)
    return lambda intent: any(pred(intent) for pred in subs)


def _as_set(value: str | list[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset([value] if isinstance(value, str) else value)


@dataclass(frozen=True, slots=True)
class CompiledMatch:
    """A ``match`` block. Tool and action are resolved by the policy index; the rest here."""

    tool_patterns: tuple[str, ...] | None
    actions: frozenset[Action] | None
    target_globs: str | list[str] | None
    target: Callable[[str], bool] | None
    environments: frozenset[str] | None
    roles: frozenset[str] | None
    agents: frozenset[str] | None

    @classmethod
    def of(cls, match: Match) -> CompiledMatch:
        """Compile a match block."""
        tools = match.tool
        actions = match.action
        return cls(
            tool_patterns=None if tools is None else ((tools,) if isinstance(tools, str) else tuple(tools)),
            actions=None if actions is None else frozenset(
                [actions] if isinstance(actions, Action) else actions),
            target_globs=match.target,
            target=None if match.target is None else glob_matcher(match.target),
            environments=_as_set(match.environment),
            roles=_as_set(match.agent_role),
            agents=_as_set(match.agent_id),
        )

    def tool_matches(self, tool: str) -> bool:
        """Whether the tool globs accept ``tool`` (used when building the index)."""
        return self.tool_patterns is None or any(fnmatch.fnmatchcase(tool, p) for p in self.tool_patterns)

    @property
    def rest(self) -> Pred | None:
        """The check of everything but tool and action, or None when nothing else is constrained."""
        target, environments, roles, agents = self.target, self.environments, self.roles, self.agents
        if environments is None and roles is None and agents is None:
            return None if self.target_globs is None else target_predicate(self.target_globs)
        if target is None and roles is None and agents is None and environments is not None:
            return lambda intent: intent.environment in environments
        return self.rest_matches

    def rest_matches(self, intent: Intent) -> bool:
        """Everything but tool and action."""
        return (
            (self.target is None or self.target(intent.target))
            and (self.environments is None or intent.environment in self.environments)
            and (self.roles is None or intent.agent_role in self.roles)
            and (self.agents is None or intent.agent_id in self.agents)
        )
