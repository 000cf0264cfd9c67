"""The analyst's report over the audit: the queries and the figures they return."""

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
_WINDOW = ("event_time >= fromUnixTimestamp64Milli(%(since)s, 'UTC') "
           "AND event_time < fromUnixTimestamp64Milli(%(until)s, 'UTC')")


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


def _blocked(store: AuditStore, db: str, column: str, params: dict[str, Any]) -> list[tuple[str, int]]:
    rows = store.query(
        f"SELECT {column}, count() AS c FROM {db}.audit_events FINAL WHERE event_type = 'decision' "
        f"AND decision = 'BLOCK' AND {_WINDOW} GROUP BY {column} ORDER BY c DESC, {column} LIMIT {TOP_N}",
        params).rows
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
    rows = store.query(
        f"SELECT least(toUInt8(floor(risk_score * {RISK_BUCKETS})), {RISK_BUCKETS - 1}) AS bucket, count() "
        f"FROM {db}.audit_events FINAL WHERE event_type = 'decision' AND {_WINDOW} "
        "GROUP BY bucket ORDER BY bucket", params).rows
    counts = {int(row[0]): int(row[1]) for row in rows}
    width = 1 / RISK_BUCKETS
    return [(f"{b * width:.1f}-{(b + 1) * width:.1f}", counts.get(b, 0)) for b in range(RISK_BUCKETS)]


def _deviating(store: AuditStore, db: str, params: dict[str, Any]) -> list[Deviation]:
    rows = store.query(
        "SELECT agent_id, countIf(recent) AS n, avgIf(risk_score, recent) AS now_mean, "
        "avgIf(risk_score, NOT recent) AS past_mean, sumMapIf(risk_factors, recent) AS factors "
        "FROM (SELECT agent_id, risk_score, risk_factors, "
        "event_time >= fromUnixTimestamp64Milli(%(since)s, 'UTC') AS recent "
        f"FROM {db}.audit_events FINAL WHERE event_type = 'decision' "
        "AND event_time >= fromUnixTimestamp64Milli(%(history)s, 'UTC') "
        "AND event_time < fromUnixTimestamp64Milli(%(until)s, 'UTC')) "
        "GROUP BY agent_id HAVING n > 0 AND countIf(NOT recent) > 0 "
        f"ORDER BY now_mean - past_mean DESC, agent_id LIMIT {TOP_N}", params).rows
    found = []
    for agent, count, now_mean, past_mean, factors in rows:
        recent, past = float(now_mean), float(past_mean)
        top = max(dict(factors).items(), key=lambda item: (item[1], item[0]), default=("", 0.0))[0]
        found.append(Deviation(str(agent), int(count), recent, past, recent - past, str(top)))
    return found


def build_report(store: AuditStore, database: str, since: timedelta, until: datetime | None = None) -> Report:
    """The report over ``[until - since, until)`` (``until`` defaults to now)."""
    db = check_identifier(database)
    end = until or datetime.now(UTC)
    start = end - since
    params = {"since": _ms(start), "until": _ms(end), "history": _ms(start - HISTORY)}
    decisions = store.query(
        f"SELECT decision, decision_final, count() AS c FROM {db}.audit_events FINAL "
        f"WHERE event_type = 'decision' AND {_WINDOW} GROUP BY decision, decision_final "
        "ORDER BY c DESC, decision", params).rows
    return Report(
        since=start, until=end,
        decisions=[(str(d), bool(f), int(c)) for d, f, c in decisions],
        blocked_agents=_blocked(store, db, "agent_id", params),
        blocked_tools=_blocked(store, db, "tool", params),
        approvals=_approvals(store, db, params),
        risk=_risk(store, db, params),
        deviating=_deviating(store, db, params),
    )
