"""Running figures of the demo and their rich rendering: rates, outcomes, latency, top offenders."""

from __future__ import annotations

import os
from collections import Counter, deque
from dataclasses import dataclass, field

from rich.console import Group
from rich.table import Table

from schemas import Decision, DecisionKind

RATE_WINDOW_S = 5.0
"""The intents/s figure is measured over this many recent seconds."""

SHORT_OF_RATE = 0.95
"""An offered or decided rate under this share of the one above it is explained in the view."""

BUSY_CPU = 0.9
"""The demo process is taken to be the bottleneck from this share of one core on."""

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


def _trim(recent: deque[float], now_s: float) -> None:
    while recent and recent[0] < now_s - RATE_WINDOW_S:
        recent.popleft()


@dataclass
class DemoStats:
    """What the demo has seen so far: each call offered (:meth:`offer`), each REQUIRE_APPROVAL that came
    back (:meth:`pending`), each final decision (:meth:`record`) and each tool run (:meth:`ran`)."""

    asked_rate: float = 0.0
    """The calls per second the demo was asked to offer."""
    offered_total: int = 0
    reviews: int = 0
    """Calls whose decision was REQUIRE_APPROVAL."""
    awaiting_review: int = 0
    """Of those, the ones still waiting for a reviewer's verdict."""
    outcomes: Counter[DecisionKind] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    blocked_agents: Counter[str] = field(default_factory=Counter)
    blocked_tools: Counter[str] = field(default_factory=Counter)
    approvals: Counter[str] = field(default_factory=Counter)
    runs: Counter[str] = field(default_factory=Counter)
    """Tool runs by outcome (success, error), as the guard reported them to the audit."""
    latencies_ms: list[float] = field(default_factory=list)
    """Intent published -> decision (ALLOW, BLOCK or REQUIRE_APPROVAL), never a reviewer's wait."""
    approval_waits_ms: list[float] = field(default_factory=list)
    run_s: float = 0.0
    """How long the fleet ran, once it stopped (0 while it runs)."""
    cpu_share: float = 0.0
    """The demo process's share of one core over the last rate window (:meth:`sample_cpu`)."""
    _recent: deque[float] = field(default_factory=deque)
    _offers: deque[float] = field(default_factory=deque)
    _cpu: deque[tuple[float, float]] = field(default_factory=deque)

    def offer(self, now_s: float) -> None:
        """A call was made (its intent is about to be published)."""
        self.offered_total += 1
        self._offers.append(now_s)
        _trim(self._offers, now_s)

    def pending(self, latency_ms: float) -> None:
        """A REQUIRE_APPROVAL arrived ``latency_ms`` after its intent: a decision, and a reviewer's wait."""
        self.latencies_ms.append(latency_ms)
        self.reviews += 1
        self.awaiting_review += 1

    def record(self, decision: Decision, tool: str, latency_ms: float, now_s: float,
               reviewed: bool = False) -> None:
        """Count one final decision taken ``latency_ms`` after its intent was published.

        ``reviewed``: it followed a REQUIRE_APPROVAL (see :meth:`pending`), so ``latency_ms`` is the
        approval wait, counted under the reviewer's answer (its first reason: ``approval_granted``,
        ``approval_denied`` or ``approval_expired``), not as decision latency.
        """
        self.outcomes[decision.decision] += 1
        if reviewed:
            first_reason = decision.reasons[0] if decision.reasons else ""
            outcome = first_reason.split(":", 1)[0].removeprefix(APPROVAL_REASON_PREFIX) or "answered"
            self.approvals[outcome] += 1
            self.approval_waits_ms.append(latency_ms)
            self.awaiting_review = max(0, self.awaiting_review - 1)
        else:
            self.latencies_ms.append(latency_ms)
        self._recent.append(now_s)
        _trim(self._recent, now_s)
        if decision.decision is DecisionKind.BLOCK:
            self.blocked_agents[decision.agent_id] += 1
            self.blocked_tools[tool] += 1
            self.reasons[block_reason(decision)] += 1

    def ran(self, status: str) -> None:
        """A tool ran (the guard reported its outcome: success or error)."""
        self.runs[status] += 1

    def sample_cpu(self, now_s: float, cpu_s: float | None = None) -> None:
        """Note the process's CPU time (``os.times``, user + system) at ``now_s``, for :attr:`cpu_share`."""
        if cpu_s is None:
            times = os.times()
            cpu_s = times.user + times.system
        self._cpu.append((now_s, cpu_s))
        while len(self._cpu) > 2 and self._cpu[1][0] <= now_s - RATE_WINDOW_S:
            self._cpu.popleft()
        (first_s, first_cpu), (last_s, last_cpu) = self._cpu[0], self._cpu[-1]
        if last_s > first_s:
            self.cpu_share = (last_cpu - first_cpu) / (last_s - first_s)

    @property
    def total(self) -> int:
        """Final decisions seen."""
        return sum(self.outcomes.values())

    @property
    def in_flight(self) -> int:
        """Calls offered and not answered yet (waiting for a decision or for a reviewer)."""
        return self.offered_total - self.total

    def rate(self) -> float:
        """Final decisions per second over the recent window (over the whole run, once it ended)."""
        return self.total / self.run_s if self.run_s else len(self._recent) / RATE_WINDOW_S

    def offered_rate(self) -> float:
        """Calls offered per second over the recent window (over the whole run, once it ended)."""
        return self.offered_total / self.run_s if self.run_s else len(self._offers) / RATE_WINDOW_S

    def ended(self, run_s: float) -> None:
        """The fleet stopped after ``run_s`` seconds: rates are over the whole run from now on."""
        self.run_s = run_s

    def shortfall(self) -> str:
        """Why the demo offers or decides less than it was asked to, or ``""`` when it does not."""
        why = []
        if self.asked_rate and self.offered_rate() < SHORT_OF_RATE * self.asked_rate:
            if self.cpu_share >= BUSY_CPU:
                why.append(f"offering {self.offered_rate():.0f} of {self.asked_rate:.0f} calls/s: the demo "
                           f"process (the fleet's SDK, its tools and this view, in one Python process) "
                           f"uses {100 * self.cpu_share:.0f}% of a core")
            else:
                why.append(f"offering {self.offered_rate():.0f} of {self.asked_rate:.0f} calls/s: the "
                           f"demo process gets too little CPU ({100 * self.cpu_share:.0f}% of a core; the "
                           f"machine is busy, load {os.getloadavg()[0]:.1f})")
        waiting = self.in_flight - self.awaiting_review
        if self.offered_rate() and self.rate() < SHORT_OF_RATE * self.offered_rate() and waiting > 0:
            why.append(f"{waiting} calls wait for a decision (the worker is behind)")
        return "; ".join(why)

    def render(self, title: str) -> Group:
        """The live view: headline figures, outcomes, and the top blocked agents and tools."""
        ordered = sorted(self.latencies_ms)
        headline = Table.grid(padding=(0, 3))
        headline.add_row(
            f"[bold]{title}[/]",
            f"decisions: [bold]{self.total}[/]",
            f"asked [bold]{self.asked_rate:.0f}/s[/]",
            f"offered [bold]{self.offered_rate():.0f}/s[/]",
            f"decided [bold]{self.rate():.0f}/s[/]",
            f"decision latency p50 [bold]{percentile(ordered, 0.5):.1f} ms[/]",
            f"p99 [bold]{percentile(ordered, 0.99):.1f} ms[/]",
        )
        flow = Table.grid(padding=(0, 3))
        flow.add_row(
            f"waiting for a decision: [bold]{self.in_flight - self.awaiting_review}[/]",
            f"waiting on reviewers: [bold]{self.awaiting_review}[/]",
            f"tools ran: [bold]{self.runs['success']}[/] ok, [bold]{self.runs['error']}[/] failed",
            f"demo process CPU [bold]{100 * self.cpu_share:.0f}%[/]",
        )
        shortfall = self.shortfall()
        outcomes = Table(title="decisions by outcome", expand=False)
        outcomes.add_column("decision")
        outcomes.add_column("count", justify="right")
        outcomes.add_column("share", justify="right")
        for kind in DecisionKind:
            count = self.reviews if kind is DecisionKind.REQUIRE_APPROVAL else self.outcomes[kind]
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
            flow,
            *([f"[yellow]why: {shortfall}[/]"] if shortfall else []),
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
