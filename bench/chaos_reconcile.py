"""The chaos run's reconciliation: what each agent was told, against the decisions topic and the audit.

Pure functions over what was collected; no I/O. Sources: each agent's own record of its calls (the
SDK's answers), every final decision on the decisions topic, and the final decision rows stored in
ClickHouse. The limits are recomputed from the ALLOWs, window by window, as the engine defines a window:
``(end - window, end]`` for any end.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SUM_TOLERANCE = 1e-6


@dataclass
class Call:
    """One call of one agent, as the agent recorded it."""

    request_id: str
    agent_id: str
    tool: str
    amount: float
    occurred_ms: int
    started: float
    """Monotonic time the call began."""
    verdict: str = ""
    """The final answer's decision (ALLOW, BLOCK); empty while unanswered."""
    unavailable: bool = False
    """The final answer was the SDK's ``governance_unavailable`` BLOCK."""
    approval: bool = False
    answers: int = 0
    latency_ms: float = 0.0


@dataclass(frozen=True)
class Limit:
    """A limit as the chaos policy sets it, on the ALLOWs of one tool."""

    tool: str
    window_ms: int
    per_agent_count: int | None = None
    fleet_sum: float | None = None


@dataclass
class Windows:
    """Intervals (monotonic seconds) during which something was wrong."""

    spans: list[tuple[float, float]] = field(default_factory=list)

    def add(self, start: float, end: float) -> None:
        self.spans.append((start, end))

    def overlaps(self, start: float, end: float) -> bool:
        return any(s <= end and start <= e for s, e in self.spans)


def _peak_count(times: list[int], window_ms: int) -> int:
    """Most times in any window ``(end - window, end]``."""
    ordered, low, best = sorted(times), 0, 0
    for high, end in enumerate(ordered):
        while ordered[low] <= end - window_ms:
            low += 1
        best = max(best, high - low + 1)
    return best


def _peak_sum(entries: list[tuple[int, float]], window_ms: int) -> float:
    """Largest sum of the values in any window ``(end - window, end]``."""
    ordered, low, total, best = sorted(entries), 0, 0.0, 0.0
    for at, value in ordered:
        total += value
        while ordered[low][0] <= at - window_ms:
            total -= ordered[low][1]
            low += 1
        best = max(best, total)
    return best


def limit_violations(calls: Iterable[Call], allowed: set[str], limit: Limit) -> int:
    """Agents (and the fleet) whose ALLOWs exceed ``limit`` in some window."""
    mine = [c for c in calls if c.tool == limit.tool and c.request_id in allowed]
    violations = 0
    if limit.per_agent_count is not None:
        by_agent: dict[str, list[int]] = defaultdict(list)
        for call in mine:
            by_agent[call.agent_id].append(call.occurred_ms)
        violations += sum(_peak_count(times, limit.window_ms) > limit.per_agent_count
                          for times in by_agent.values())
    if limit.fleet_sum is not None:
        peak = _peak_sum([(c.occurred_ms, c.amount) for c in mine], limit.window_ms)
        violations += peak > limit.fleet_sum + SUM_TOLERANCE
    return violations


def _span(call: Call) -> tuple[float, float]:
    """When the call was in flight (monotonic seconds)."""
    return call.started, call.started + call.latency_ms / 1e3


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if len(values) < 2:
        return {"p50": values[0] if values else None, "p99": values[0] if values else None}
    cuts = statistics.quantiles(values, n=100)
    return {"p50": round(cuts[49], 1), "p99": round(cuts[98], 1)}


def conflict_causes(calls: Iterable[Call], topic: dict[str, list[str]], conflicting: set[str],
                    seen: dict[str, float]) -> dict[str, int]:
    """Where each conflict comes from. ``on_topic``: two different finals on the decisions topic;
    otherwise the agent was told one thing and the topic says another, and ``seen`` (when the request's
    first final was read from the topic, live) tells ``final_before_answer`` (the final was there before
    the agent's answer: the SDK missed or contradicted it) from ``final_after_answer`` (it reached the
    topic after the agent had stopped waiting: a late final); ``final_not_seen`` when not read live."""
    causes: Counter[str] = Counter()
    by_id = {call.request_id: call for call in calls}
    for rid in conflicting:
        call, at = by_id.get(rid), seen.get(rid)
        if len(set(topic.get(rid, ()))) > 1 or call is None:
            causes["on_topic"] += 1
        elif at is None:
            causes["final_not_seen"] += 1
        else:
            causes["final_after_answer" if at > _span(call)[1] else "final_before_answer"] += 1
    return dict(causes)


def reconcile(calls: list[Call], topic: dict[str, list[str]], audit: dict[str, Counter[str]],
              limits: Iterable[Limit], faults: Windows, outages: Windows,
              seen: dict[str, float] | None = None) -> dict[str, Any]:
    """The counters of the run. ``topic``: the final decisions per request id on the decisions topic
    (one entry per record); ``audit``: the final decision rows per request id and decision; ``seen``:
    when each request's first final was read from the topic during the run (monotonic seconds)."""
    sent = {c.request_id for c in calls}
    answered = [c for c in calls if c.answers]
    unavailable = [c for c in answered if c.unavailable]
    outage_unavailable = [c for c in unavailable if outages.overlaps(*_span(c))]
    conflicting = {rid for rid, finals in topic.items() if len(set(finals)) > 1}
    for call in answered:
        finals = set(topic.get(call.request_id, ()))
        told = {"BLOCK"} if call.unavailable else {call.verdict}  # "unavailable" is a BLOCK
        if finals - told:
            conflicting.add(call.request_id)
    allowed = {rid for rid, finals in topic.items() if "ALLOW" in finals and rid in sent}
    decided = {rid for rid in sent if topic.get(rid)}
    audited = {rid for rid, rows in audit.items() if rid in sent}
    audit_extra = sum(sum(rows.values()) - 1 for rid, rows in audit.items() if rid in sent)
    audit_extra += sum(1 for rid, rows in audit.items()
                       if rid in sent and set(rows) - set(topic.get(rid, ())))
    quick = [c for c in answered if not c.approval and not c.unavailable]
    return {
        "sent": len(calls),
        "answered": len(answered),
        "decided": len(decided),
        "lost": len(calls) - len(answered) + len(unavailable) - len(outage_unavailable),
        "duplicated": sum(c.answers > 1 for c in calls),
        "conflicting": len(conflicting),
        "conflict_causes": conflict_causes(answered, topic, conflicting, seen or {}),
        "limit_violations": sum(limit_violations(calls, allowed, limit) for limit in limits),
        "audit_missing": len(decided - audited),
        "audit_extra": audit_extra,
        "governance_unavailable_broker_down": len(outage_unavailable),
        "redelivered_finals": sum(len(topic[rid]) - 1 for rid in decided),
        "verdicts": dict(Counter(c.verdict for c in answered if not c.unavailable)),
        "approvals": sum(c.approval for c in calls),
        "latency_ms_outside_faults": _percentiles(
            [c.latency_ms for c in quick if not faults.overlaps(*_span(c))]),
        "latency_ms_during_faults": _percentiles(
            [c.latency_ms for c in quick if faults.overlaps(*_span(c))]),
    }


COUNTERS = ("lost", "duplicated", "conflicting", "limit_violations", "audit_missing", "audit_extra",
            "crashes")
"""The counters a clean run ends with at 0."""


def table(result: dict[str, Any]) -> str:
    """The result as an aligned two-column table."""
    rows = [(key, str(value)) for key, value in result.items()]
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)
