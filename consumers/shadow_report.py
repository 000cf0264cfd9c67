"""``sluicegate policy shadow-report``: the shadow policy's audited decisions against the enforced ones.

Each ``shadow_decision`` event (:mod:`streams.stages.shadow`) is paired with the first ``decision``
event of the same request: the enforced policy's own decision (a REQUIRE_APPROVAL as it was asked,
before any reviewer), which is what the shadow's decision compares with. The pairs fill the flip table
of :mod:`consumers.policy_diff`. A request stored twice counts once (``LIMIT 1 BY request_id``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from consumers.audit_store import AuditStore
from consumers.policy_diff import Flip, FlipTable
from infra.clickhouse.migrate import check_identifier
from schemas import DecisionKind

ENFORCED_SLACK: Final = timedelta(hours=1)
"""How far from its shadow decision the enforced decision of a request is looked for (a forwarded
intent is decided after its hops)."""
_PAIRS_SQL = """
SELECT toString(s.request_id), s.agent_id, s.tool, s.event_time, e.decision, s.decision, s.determining,
       s.reasons, s.approver_group, s.policy_version, e.policy_version
FROM (
    SELECT request_id, agent_id, tool, event_time, decision, determining, reasons, approver_group,
           policy_version
    FROM {db}.audit_events
    WHERE event_type = 'shadow_decision'
      AND event_time >= fromUnixTimestamp64Milli(%(since)s, 'UTC')
      AND event_time < fromUnixTimestamp64Milli(%(until)s, 'UTC')
      AND (%(version)s = '' OR policy_version = %(version)s)
    ORDER BY event_time, event_id
    LIMIT 1 BY request_id
) AS s
INNER JOIN (
    SELECT request_id, decision, policy_version
    FROM {db}.audit_events
    WHERE event_type = 'decision'
      AND event_time >= fromUnixTimestamp64Milli(%(since)s - %(slack)s, 'UTC')
      AND event_time < fromUnixTimestamp64Milli(%(until)s + %(slack)s, 'UTC')
    ORDER BY event_time, event_id
    LIMIT 1 BY request_id
) AS e ON s.request_id = e.request_id
ORDER BY s.event_time, s.request_id
"""
_LATEST_SQL = """
SELECT policy_version FROM {db}.audit_events
WHERE event_type = 'shadow_decision' AND event_time >= fromUnixTimestamp64Milli(%(since)s, 'UTC')
  AND event_time < fromUnixTimestamp64Milli(%(until)s, 'UTC')
ORDER BY event_time DESC LIMIT 1
"""
_DECISIONS: Final = {kind.value: kind for kind in DecisionKind}


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def shadow_report(store: AuditStore, database: str, since: timedelta, until: datetime | None = None,
                  version: str | None = None) -> FlipTable:
    """The flip table of the shadow decisions audited in the last ``since`` (up to ``until``, default
    now) of shadow ``version`` (default: the latest shadow's), against the enforced decisions."""
    db = check_identifier(database)
    end = until or datetime.now(UTC)
    params: dict[str, int | str] = {"since": _ms(end - since), "until": _ms(end)}
    if version is None:
        latest = store.query(_LATEST_SQL.format(db=db), params).rows
        version = str(latest[0][0]) if latest else ""
    params |= {"version": version, "slack": int(ENFORCED_SLACK / timedelta(milliseconds=1))}
    table = FlipTable("", version)
    enforced_versions: set[str] = set()
    for (request_id, agent_id, tool, at, enforced, shadow, determining, reasons, group, _,
         enforced_version) in store.query(_PAIRS_SQL.format(db=db), params).rows:
        before, after = _DECISIONS[enforced], _DECISIONS[shadow]
        occurred = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
        enforced_versions.add(str(enforced_version))
        table.add(Flip(str(request_id), str(agent_id), str(tool), occurred.astimezone(UTC), before, after,
                       tuple(determining), tuple(reasons), str(group)))
    table.before_version = ",".join(sorted(enforced_versions))
    return table
