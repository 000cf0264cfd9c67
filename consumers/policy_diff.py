"""What a policy change does to decisions: the flip table shared by ``sluicegate policy diff`` (a replay
of past intents through two policies) and ``sluicegate policy shadow-report`` (the shadow's audited
decisions against the enforced ones).

A *flip* is an intent whose decision differs between the two sides (``before``: the old or enforced
policy; ``after``: the new or shadow one). The table counts every pair of decisions, and for flips: by
kind (``ALLOW->BLOCK``), by what determined the new decision, by agent and by tool, the approvals the
new side would ask for that the old one did not (per reviewer group, and per hour of the span of the
compared intents), and a few examples of each kind. Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from schemas import DecisionKind, Intent
from streams.engine import CompiledPolicy, InMemoryState, decide

EXAMPLES_PER_KIND: Final = 3
TOP: Final = 10
_APPROVAL = DecisionKind.REQUIRE_APPROVAL
_MIN_SPAN: Final = timedelta(minutes=1)
"""The shortest span a rate per hour is computed over (a burst of seconds is not an hourly rate)."""


def kind_name(before: DecisionKind, after: DecisionKind) -> str:
    """``ALLOW->BLOCK``."""
    return f"{before.value}->{after.value}"


@dataclass(frozen=True, slots=True)
class Flip:
    """One intent decided differently by the two sides."""

    request_id: str
    agent_id: str
    tool: str
    occurred_at: datetime
    before: DecisionKind
    after: DecisionKind
    determining: tuple[str, ...]
    """What determined the ``after`` decision."""
    reasons: tuple[str, ...]
    """The reasons of the ``after`` decision."""
    group: str = ""
    """The reviewer group of an ``after`` REQUIRE_APPROVAL."""

    @property
    def kind(self) -> str:
        return kind_name(self.before, self.after)

    def to_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "agent_id": self.agent_id, "tool": self.tool,
                "occurred_at": self.occurred_at.isoformat(), "kind": self.kind,
                "determining": list(self.determining), "reasons": list(self.reasons),
                "group": self.group or None}


@dataclass(slots=True)
class FlipTable:
    """Every decision pair of the compared intents, and the flips by kind, rule, agent, tool, group."""

    before_version: str
    after_version: str
    pairs: Counter[tuple[DecisionKind, DecisionKind]] = field(default_factory=Counter)
    by_rule: Counter[str] = field(default_factory=Counter)
    by_agent: Counter[str] = field(default_factory=Counter)
    by_tool: Counter[str] = field(default_factory=Counter)
    approvals_added: Counter[str] = field(default_factory=Counter)
    """Per reviewer group: intents the ``after`` side sends to approval and the ``before`` side did not."""
    examples: dict[str, list[Flip]] = field(default_factory=dict)
    first: datetime | None = None
    last: datetime | None = None

    def note(self, at: datetime, before: DecisionKind, after: DecisionKind, count: int = 1) -> None:
        """Count ``count`` intents decided ``before`` and ``after`` (flips go through :meth:`add`)."""
        self.pairs[before, after] += count
        self.first = at if self.first is None or at < self.first else self.first
        self.last = at if self.last is None or at > self.last else self.last

    def add(self, flip: Flip) -> None:
        """Count one intent; a flip also counts by rule, agent, tool and group, and may be an example."""
        self.note(flip.occurred_at, flip.before, flip.after)
        if flip.before is flip.after:
            return
        self.by_rule.update(flip.determining or ("(none)",))
        self.by_agent[flip.agent_id] += 1
        self.by_tool[flip.tool] += 1
        if flip.after is _APPROVAL:
            self.approvals_added[flip.group] += 1
        examples = self.examples.setdefault(flip.kind, [])
        if len(examples) < EXAMPLES_PER_KIND:
            examples.append(flip)

    @property
    def compared(self) -> int:
        return sum(self.pairs.values())

    @property
    def flips(self) -> Counter[str]:
        """Flips by kind (``ALLOW->BLOCK``: n)."""
        return Counter({kind_name(b, a): n for (b, a), n in self.pairs.items() if b is not a})

    @property
    def span_hours(self) -> float:
        """Hours between the first and the last compared intent (at least a minute)."""
        if self.first is None or self.last is None:
            return _MIN_SPAN / timedelta(hours=1)
        return max(self.last - self.first, _MIN_SPAN) / timedelta(hours=1)

    def approvals_per_hour(self) -> dict[str, float]:
        """The added approvals per hour of the span, per reviewer group."""
        hours = self.span_hours
        return {group: round(n / hours, 3) for group, n in sorted(self.approvals_added.items())}

    def matches(self, pattern: str) -> int:
        """Flips of a kind pattern ``BEFORE->AFTER`` where either side may be ``*``."""
        before, _, after = pattern.partition("->")
        return sum(n for kind, n in self.flips.items()
                   if _side(kind.partition("->")[0], before) and _side(kind.partition("->")[2], after))

    def to_dict(self) -> dict[str, Any]:
        """The table as JSON-ready data."""
        return {
            "before_version": self.before_version, "after_version": self.after_version,
            "compared": self.compared, "flipped": sum(self.flips.values()),
            "pairs": {kind_name(b, a): n for (b, a), n in sorted(self.pairs.items())},
            "flips": dict(self.flips.most_common()),
            "by_rule": dict(self.by_rule.most_common(TOP)), "by_agent": dict(self.by_agent.most_common(TOP)),
            "by_tool": dict(self.by_tool.most_common(TOP)),
            "approvals_added": dict(sorted(self.approvals_added.items())),
            "approvals_added_per_hour": self.approvals_per_hour(), "span_hours": round(self.span_hours, 3),
            "examples": {kind: [flip.to_dict() for flip in flips] for kind, flips in self.examples.items()},
        }


def _side(value: str, pattern: str) -> bool:
    return pattern in ("*", value)


def check_pattern(pattern: str) -> str:
    """``pattern`` when it is ``BEFORE->AFTER`` with decisions or ``*``; else ValueError."""
    names = {kind.value for kind in DecisionKind} | {"*"}
    before, arrow, after = pattern.strip().upper().partition("->")
    if not arrow or before not in names or after not in names:
        raise ValueError(f"{pattern!r} is not a flip like ALLOW->BLOCK (decisions or *)")
    return f"{before}->{after}"


def diff(old: CompiledPolicy, new: CompiledPolicy, intents: Iterable[Intent]) -> FlipTable:
    """Decide every intent, in the given (event) order, through both policies, each with fresh state
    of its own (as ``sluicegate evaluate`` would), and table the flips from ``old`` to ``new``."""
    table = FlipTable(old.version, new.version)
    old_state, new_state = InMemoryState(), InMemoryState()
    for intent in intents:
        before = decide(old, old_state, intent)
        after = decide(new, new_state, intent)
        group = new.approval_for(after.rules).group if after.decision is _APPROVAL else ""
        table.add(Flip(str(intent.request_id), intent.agent_id, intent.tool, intent.occurred_at,
                       before.decision, after.decision, after.determining, after.reasons, group))
    return table


def in_event_order(intents: Iterable[Intent]) -> Iterator[Intent]:
    """The intents sorted by ``occurred_at`` (stable: ties keep their order)."""
    return iter(sorted(intents, key=lambda intent: intent.occurred_at))
