"""Backtest: replay audited intents in event time through a candidate policy and compare decisions.

The engine is the pure one the workers run (``streams.engine.decide``, in-memory window and history
state), so a replay under the live policy gives back the decisions that were made, up to approvals:
an intent that was approved later counted as allowed live, but is replayed with the engine's own
decision.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import UUID

from consumers.audit_store import AuditStore
from infra.clickhouse.migrate import check_identifier
from schemas import SCHEMA_VERSION, Action, DecisionKind, Intent, TraceContext
from streams.engine import CompiledPolicy, InMemoryState, decide
from streams.engine.build import trusted

EXAMPLES_PER_RULE: Final = 3
NO_RULE: Final = "(default)"
_HISTORY_SQL = """
SELECT toString(request_id), agent_id, agent_role, agent_owner, environment, tool, action, target, params,
       labels, toUnixTimestamp64Milli(assumeNotNull(occurred_at)) AS occurred_ms, traceparent, decision
FROM {db}.audit_events
WHERE event_type = 'decision' AND action != '' AND occurred_at IS NOT NULL
  AND occurred_at >= fromUnixTimestamp64Milli(%(since)s, 'UTC')
  AND occurred_at < fromUnixTimestamp64Milli(%(until)s, 'UTC')
ORDER BY occurred_ms, request_id, event_time
LIMIT 1 BY request_id
"""
"""The first decision event of every request, in event time: every decision of a request carries the
same intent, so its first row in (event time, request, decision time) order is the first decision;
``LIMIT 1 BY`` also drops a copy stored twice, so no FINAL. Request ids come as text: parsing them in
Python is cheaper than the driver's UUID column decoding."""
_INTENT_FIELDS: Final = set(Intent.model_fields)
_TRACE_FIELDS: Final = set(TraceContext.model_fields)
_ACTIONS: Final = {action.value: action for action in Action}
_DECISIONS: Final = {kind.value: kind for kind in DecisionKind}


class BacktestError(ValueError):
    """The stored history cannot be replayed (a row that no intent could have produced)."""


@dataclass(frozen=True, slots=True)
class Audited:
    """An intent as audited, with the decision the live policy made."""

    intent: Intent
    decision: DecisionKind


@dataclass(frozen=True, slots=True)
class Changed:
    """One intent whose decision would change."""

    request_id: str
    agent_id: str
    tool: str
    occurred_at: datetime
    before: DecisionKind
    after: DecisionKind
    reasons: tuple[str, ...]


@dataclass(slots=True)
class RuleChanges:
    """The changed decisions a rule of the candidate policy took part in."""

    count: int = 0
    examples: list[Changed] = field(default_factory=list)


@dataclass(slots=True)
class BacktestResult:
    """How the candidate policy would have decided the audited intents."""

    policy_version: str
    replayed: int = 0
    transitions: Counter[tuple[DecisionKind, DecisionKind]] = field(default_factory=Counter)
    by_rule: dict[str, RuleChanges] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        """Intents whose decision differs."""
        return sum(n for (before, after), n in self.transitions.items() if before is not after)


def replay(policy: CompiledPolicy, history: Iterable[Audited]) -> BacktestResult:
    """Decide every audited intent, in the given (event time) order, with fresh state."""
    state = InMemoryState()
    result = BacktestResult(policy_version=policy.version)
    for audited in history:
        decision = decide(policy, state, audited.intent)
        result.replayed += 1
        result.transitions[audited.decision, decision.decision] += 1
        if decision.decision is audited.decision:
            continue
        changed = Changed(str(audited.intent.request_id), audited.intent.agent_id, audited.intent.tool,
                          audited.intent.occurred_at, audited.decision, decision.decision, decision.reasons)
        for rule in decision.rules or (NO_RULE,):
            entry = result.by_rule.setdefault(rule, RuleChanges())
            entry.count += 1
            if len(entry.examples) < EXAMPLES_PER_RULE:
                entry.examples.append(changed)
    return result


def _intent(row: tuple[Any, ...]) -> Intent:
    """The stored intent, rebuilt without re-validation: every stored row was validated by the wire
    model when the sink decoded it, and each value is restored to the field's own type here (UUID,
    Action, aware UTC datetime, dicts, TraceContext), so the result equals the validated original.
    Full validation would cost more than deciding the intent (~12 us against ~0.5 us)."""
    (request_id, agent_id, role, owner, environment, tool, action, target, params, labels,
     occurred_ms, traceparent, _) = row
    if action not in _ACTIONS:
        raise BacktestError(f"request {request_id}: stored action {action!r} is not an Action")
    trace = (trusted(TraceContext, _TRACE_FIELDS, {"traceparent": traceparent, "tracestate": None})
             if traceparent else None)
    return trusted(Intent, _INTENT_FIELDS, {
        "schema_version": SCHEMA_VERSION, "request_id": UUID(request_id), "agent_id": agent_id,
        "agent_role": role, "agent_owner": owner or None,
        "environment": environment, "tool": tool, "action": _ACTIONS[action], "target": target,
        "params": json.loads(params), "labels": dict(labels),
        "occurred_at": datetime.fromtimestamp(occurred_ms / 1000, UTC),
        "trace": trace, "session_id": None,  # not audited yet: session-keyed sequence rules see one session
    })


def audited_intents(store: AuditStore, database: str, since: datetime, until: datetime) -> Iterator[Audited]:
    """The first decision event of every request that occurred in ``[since, until)``, in event time."""
    sql = _HISTORY_SQL.format(db=check_identifier(database))
    params = {"since": int(since.timestamp() * 1000), "until": int(until.timestamp() * 1000)}
    for row in store.query(sql, params).rows:
        yield Audited(_intent(row), _DECISIONS[row[-1]])


def backtest(store: AuditStore, database: str, policy: CompiledPolicy, since: timedelta,
             until: datetime | None = None) -> BacktestResult:
    """Replay the intents audited in the last ``since`` (up to ``until``, default now)."""
    end = until or datetime.now(UTC)
    return replay(policy, audited_intents(store, database, end - since, end))
