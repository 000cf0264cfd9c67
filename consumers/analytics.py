"""The analyst's report over the audit: the queries and the figures they return.

Every figure but approval latency comes from the ``decisions_per_minute`` rollup (whole minutes)
plus ``decision_events`` (the partial minutes at the window's edges), both holding each decision
event once, so no query needs FINAL or reads the raw ``audit_events``; the top block reasons likewise
from ``determining_per_minute`` plus ``decision_determining``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from consumers.audit_store import AuditStore
from infra.clickhouse.migrate import check_identifier

TOP_N: Final = 10
HISTORY: Final = timedelta(days=30)
"""How far back before the report window an agent's history reaches."""
RISK_BUCKETS: Final = 5
"""Equal-width risk buckets; ``risk_bucket`` is computed with the same count in migration 0002."""
MINUTE_MS: Final = 60_000
NOT_RECORDED: Final = "(not recorded)"
"""The block reason of a decision that names nothing in ``determining`` (made before the field existed)."""


@dataclass(frozen=True, slots=True)
class ApprovalStats:
    """Approval requests created in the window."""

    decided: int
    p50_s: float | None
    p95_s: float | None
    expired: int
    pending: int


@dataclass(frozen=True, slots=True)
class Deviation:
    """One agent's mean risk in the window against its own history."""

    agent_id: str
    decisions: int
    recent_risk: float
    history_risk: float
    deviation: float
    top_factor: str


@dataclass(frozen=True, slots=True)
class Report:
    """Every figure of ``sluicegate audit report``."""

    since: datetime
    until: datetime
    decisions: list[tuple[str, bool, int]]
    blocked_agents: list[tuple[str, int]]
    blocked_tools: list[tuple[str, int]]
    approvals: ApprovalStats
    risk: list[tuple[str, int]]
    deviating: list[Deviation] = field(default_factory=list)
    block_reasons: list[tuple[str, int]] = field(default_factory=list)
    """What determined the BLOCKs (``determining``, joined with `` + ``), most frequent first."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--format json``."""
        data = asdict(self)
        data["since"], data["until"] = self.since.isoformat(), self.until.isoformat()
        return data


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _pairs(rows: Sequence[tuple[Any, ...]]) -> list[tuple[str, int]]:
    return [(str(row[0]), int(row[1])) for row in rows]


def _window_params(name: str, start: int, end: int) -> dict[str, int]:
    """Split ``[start, end)`` (ms) into whole minutes (read from the rollup) and the two partial edges."""
    inner_lo, inner_hi = -(-start // MINUTE_MS) * MINUTE_MS, end // MINUTE_MS * MINUTE_MS
    if inner_lo >= inner_hi:  # shorter than a whole minute: all of it from the events
        return {f"{name}_lo": 0, f"{name}_hi": 0, f"{name}_a": start, f"{name}_b": end,
                f"{name}_c": 0, f"{name}_d": 0}
    return {f"{name}_lo": inner_lo, f"{name}_hi": inner_hi, f"{name}_a": start, f"{name}_b": inner_lo,
            f"{name}_c": inner_hi, f"{name}_d": end}


def _bounds(name: str) -> tuple[str, str]:
    """The conditions of the window ``name``: the whole minutes (rollup rows, ``lo`` to ``hi``), and
    the event rows at its two edges (``a`` to ``b``, ``c`` to ``d``)."""
    def at(key: str) -> str:
        return f"fromUnixTimestamp64Milli(%({name}_{key})s, 'UTC')"

    edge = f"(event_time >= {at('a')} AND event_time < {at('b')}) OR " \
           f"(event_time >= {at('c')} AND event_time < {at('d')})"
    edge_minutes = f"(minute >= toStartOfMinute({at('a')}) AND minute < {at('b')}) OR " \
                   f"(minute >= toStartOfMinute({at('c')}) AND minute < {at('d')})"
    return f"minute >= {at('lo')} AND minute < {at('hi')}", f"({edge_minutes}) AND ({edge})"


def _window(db: str, name: str) -> str:
    """Decisions in the window ``name``, each counted once: rollup rows for the whole minutes, event
    rows for the edges; columns (agent_id, tool, decision, decision_final, risk_bucket, decisions,
    risk_sum, factors)."""
    minutes, edges = _bounds(name)
    return (
        "SELECT agent_id, tool, decision, decision_final, risk_bucket, decisions, risk_sum, factors "
        f"FROM {db}.decisions_per_minute WHERE {minutes} "
        "UNION ALL "
        "SELECT agent_id, tool, decision, decision_final, risk_bucket, toUInt64(1), risk_score, "
        "CAST(risk_factors, 'Map(String, Float64)') "
        f"FROM {db}.decision_events WHERE {edges}"
    )


def _determining_window(db: str, name: str) -> str:
    """What determined each decision in the window ``name``, counted once (as :func:`_window`):
    columns (decision, determining, decisions)."""
    minutes, edges = _bounds(name)
    return (
        f"SELECT decision, determining, decisions FROM {db}.determining_per_minute "
        f"WHERE {minutes} "
        "UNION ALL "
        f"SELECT decision, determining, toUInt64(1) FROM {db}.decision_determining "
        f"WHERE {edges}"
    )


def _block_reasons(store: AuditStore, db: str, params: dict[str, Any]) -> list[tuple[str, int]]:
    """The top BLOCK reasons: what determined each BLOCK (not everything that applied to it)."""
    rows = store.query(
        f"SELECT if(empty(determining), '{NOT_RECORDED}', arrayStringConcat(determining, ' + ')) AS reason, "
        f"sum(decisions) AS c FROM ({_determining_window(db, 'w')}) WHERE decision = 'BLOCK' "
        f"GROUP BY reason ORDER BY c DESC, reason LIMIT {TOP_N}", params).rows
    return _pairs(rows)


def _blocked(store: AuditStore, db: str, column: str, params: dict[str, Any]) -> list[tuple[str, int]]:
    rows = store.query(
        f"SELECT {column}, sum(decisions) AS c FROM ({_window(db, 'w')}) WHERE decision = 'BLOCK' "
        f"GROUP BY {column} ORDER BY c DESC, {column} LIMIT {TOP_N}", params).rows
    return _pairs(rows)


def _approvals(store: AuditStore, db: str, params: dict[str, Any]) -> ApprovalStats:
    row = store.query(
        "SELECT countIf(v IS NOT NULL), "
        "quantileExactInclusiveIf(0.5)(latency, v IS NOT NULL), "
        "quantileExactInclusiveIf(0.95)(latency, v IS NOT NULL), "
        "countIf(v IS NULL AND d < fromUnixTimestamp64Milli(%(until)s, 'UTC')), "
        "countIf(v IS NULL AND d >= fromUnixTimestamp64Milli(%(until)s, 'UTC')) "
        "FROM (SELECT request_id, min(requested_at) AS r, max(verdict_at) AS v, max(deadline_at) AS d, "
        "ifNull(dateDiff('millisecond', r, v), 0) / 1000 AS latency "
        f"FROM {db}.approval_latency GROUP BY request_id) "
        "WHERE r >= fromUnixTimestamp64Milli(%(since)s, 'UTC') "
        "AND r < fromUnixTimestamp64Milli(%(until)s, 'UTC')",
        params).rows[0]
    decided = int(row[0])
    return ApprovalStats(decided, _number(row[1]) if decided else None, _number(row[2]) if decided else None,
                         int(row[3]), int(row[4]))


def _risk(store: AuditStore, db: str, params: dict[str, Any]) -> list[tuple[str, int]]:
    rows = store.query(f"SELECT risk_bucket, sum(decisions) FROM ({_window(db, 'w')}) "
                       "GROUP BY risk_bucket ORDER BY risk_bucket", params).rows
    counts = {int(row[0]): int(row[1]) for row in rows}
    width = 1 / RISK_BUCKETS
    return [(f"{b * width:.1f}-{(b + 1) * width:.1f}", counts.get(b, 0)) for b in range(RISK_BUCKETS)]


def _deviating(store: AuditStore, db: str, params: dict[str, Any]) -> list[Deviation]:
    rows = store.query(
        "SELECT agent_id, sumIf(decisions, recent) AS n, sumIf(risk_sum, recent) / n AS now_mean, "
        "sumIf(risk_sum, NOT recent) / sumIf(decisions, NOT recent) AS past_mean "
        f"FROM (SELECT agent_id, decisions, risk_sum, true AS recent FROM ({_window(db, 'w')}) "
        f"UNION ALL SELECT agent_id, decisions, risk_sum, false FROM ({_window(db, 'h')})) "
        "GROUP BY agent_id HAVING n > 0 AND sumIf(decisions, NOT recent) > 0 "
        f"ORDER BY now_mean - past_mean DESC, agent_id LIMIT {TOP_N}", params).rows
    if not rows:
        return []
    factors = {str(agent): dict(sums) for agent, sums in store.query(
        f"SELECT agent_id, sumMap(factors) FROM ({_window(db, 'w')}) WHERE has(%(agents)s, agent_id) "
        "GROUP BY agent_id", {**params, "agents": [str(row[0]) for row in rows]}).rows}
    found = []
    for agent, count, now_mean, past_mean in rows:
        recent, past = float(now_mean), float(past_mean)
        top = max(factors.get(str(agent), {}).items(), key=lambda item: (item[1], item[0]),
                  default=("", 0.0))[0]
        found.append(Deviation(str(agent), int(count), recent, past, recent - past, str(top)))
    return found


def build_report(store: AuditStore, database: str, since: timedelta, until: datetime | None = None) -> Report:
    """The report over ``[until - since, until)`` (``until`` defaults to now)."""
    db = check_identifier(database)
    end = until or datetime.now(UTC)
    start = end - since
    params = {"since": _ms(start), "until": _ms(end), **_window_params("w", _ms(start), _ms(end)),
              **_window_params("h", _ms(start - HISTORY), _ms(start))}
    decisions = store.query(
        f"SELECT decision, decision_final, sum(decisions) AS c FROM ({_window(db, 'w')}) "
        "GROUP BY decision, decision_final ORDER BY c DESC, decision", params).rows
    return Report(
        since=start, until=end,
        decisions=[(str(d), bool(f), int(c)) for d, f, c in decisions],
        blocked_agents=_blocked(store, db, "agent_id", params),
        blocked_tools=_blocked(store, db, "tool", params),
        approvals=_approvals(store, db, params),
        risk=_risk(store, db, params),
        deviating=_deviating(store, db, params),
        block_reasons=_block_reasons(store, db, params),
    )
