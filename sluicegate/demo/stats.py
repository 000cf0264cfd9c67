"""Running figures of the demo and their rich rendering: rates, outcomes, latency, top offenders."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from rich.console import Group
from rich.table import Table

from schemas import Decision, DecisionKind

RATE_WINDOW_S = 5.0
"""The intents/s figure is measured over this many recent seconds."""

APPROVAL_REASON_PREFIX = "approval_"
"""Final decisions made by a reviewer start with approval_granted, approval_denied or approval_expired."""


def block_reason(decision: Decision) -> str:
    """What a BLOCK counts under: what determined it (``determining``, joined with `` + ``), not every rule
    that applied; the first reason of a decision that names nothing there."""
    if decision.determining:
        return " + ".join(decision.determining)
    return decision.reasons[0] if decision.reasons else "(no reason)"


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


@dataclass
class DemoStats:
    """What the demo has seen so far; `record` is called once per final decision."""

    outcomes: Counter[DecisionKind] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    blocked_agents: Counter[str] = field(default_factory=Counter)
    blocked_tools: Counter[str] = field(default_factory=Counter)
    approvals: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    approval_waits_ms: list[float] = field(default_factory=list)
    _recent: deque[float] = field(default_factory=deque)

    def record(self, decision: Decision, tool: str, latency_ms: float, now_s: float) -> None:
        """Count one final decision taken `latency_ms` after its intent was published.

        A decision a reviewer made (its first reason is `approval_granted`, `approval_denied` or
        `approval_expired`) counts as an approval wait, not as decision latency.
        """
        self.outcomes[decision.decision] += 1
        first_reason = decision.reasons[0] if decision.reasons else ""
        if first_reason.startswith(APPROVAL_REASON_PREFIX):
            outcome = first_reason.split(":", 1)[0].removeprefix(APPROVAL_REASON_PREFIX)
            self.approvals[outcome] += 1
            self.approval_waits_ms.append(latency_ms)
        else:
            self.latencies_ms.append(latency_ms)
        self._recent.append(now_s)
        while self._recent and self._recent[0] < now_s - RATE_WINDOW_S:
            self._recent.popleft()
        if decision.decision is DecisionKind.BLOCK:
            self.blocked_agents[decision.agent_id] += 1
            self.blocked_tools[tool] += 1
            self.reasons[block_reason(decision)] += 1

    @property
    def total(self) -> int:
        """Final decisions seen."""
        return sum(self.outcomes.values())

    def rate(self) -> float:
        """Decisions per second over the recent window."""
        return len(self._recent) / RATE_WINDOW_S

    def render(self, title: str) -> Group:
        """The live view: headline figures, outcomes, and the top blocked agents and tools."""
        ordered = sorted(self.latencies_ms)
        headline = Table.grid(padding=(0, 3))
        headline.add_row(
            f"[bold]{title}[/]",
            f"decisions: [bold]{self.total}[/]",
            f"rate: [bold]{self.rate():.0f}/s[/]",
            f"latency p50 [bold]{percentile(ordered, 0.5):.1f} ms[/]",
            f"p99 [bold]{percentile(ordered, 0.99):.1f} ms[/]",
        )
        outcomes = Table(title="decisions by outcome", expand=False)
        outcomes.add_column("decision")
        outcomes.add_column("count", justify="right")
        outcomes.add_column("share", justify="right")
        for kind in DecisionKind:
            count = self.outcomes[kind]
            outcomes.add_row(kind.value, str(count), f"{100 * count / max(self.total, 1):.1f}%")
        waits = sorted(self.approval_waits_ms)
        reviewed = Table.grid(padding=(0, 3))
        reviewed.add_row(
            "[bold]approvals[/]",
            *(f"{outcome}: [bold]{count}[/]" for outcome, count in sorted(self.approvals.items())),
            f"wait p50 [bold]{percentile(waits, 0.5) / 1000:.1f} s[/]",
        )
        return Group(
            headline,
            outcomes,
            reviewed,
            _top_table("top blocked agents", "agent", self.blocked_agents),
            _top_table("top blocked tools", "tool", self.blocked_tools),
            _top_table("top block reasons", "determined by", self.reasons),
        )


def _top_table(title: str, label: str, counts: Counter[str], limit: int = 5) -> Table:
    table = Table(title=title, expand=False)
    table.add_column(label, overflow="fold", max_width=70)
    table.add_column("blocked", justify="right")
    for name, count in counts.most_common(limit):
        table.add_row(name, str(count))
    return table
