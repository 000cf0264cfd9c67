"""Backtests over stored audit history with the pure engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consumers.audit_store import ClientStore
from consumers.backtest import backtest
from schemas import Action, AuditEventType, AuditRecord, DecisionKind
from streams.engine import InMemoryState, compile_policy, decide, load_policy
from tests.consumers.conftest import Store
from tests.consumers.records import intent

pytestmark = pytest.mark.integration
LIVE = Path(__file__).parents[2] / "policies" / "examples" / "customer_support.yaml"
STRICTER_RULE = """
  - id: refund-over-20-needs-approval
    match: {tool: payments.refund}
    when: {field: params.amount, op: gt, value: 20}
    decision: REQUIRE_APPROVAL
"""
UNTIL = datetime(2026, 2, 1, tzinfo=UTC)
AMOUNTS = (5, 15, 25, 35, 45, 55, 600)


def _history() -> list[AuditRecord]:
    """Two agents' refunds and lookups over a day, decided live by the customer support policy."""
    policy, state, records = load_policy(LIVE), InMemoryState(), []
    at = UNTIL - timedelta(hours=20)
    for round_ in range(3):
        for agent in ("agent-1", "agent-2"):
            for amount in AMOUNTS:
                at += timedelta(minutes=7)
                asked = intent(at, agent=agent, amount=amount + round_)
                records.append(AuditRecord(event_id=f"decision:{asked.request_id}",
                                           event_type=AuditEventType.DECISION, event_time=at,
                                           request_id=asked.request_id, intent=asked,
                                           decision=decide(policy, state, asked)))
            lookup = intent(at, agent=agent, tool="crm.get_account", target="crm:accounts",
                            action=Action.READ)
            records.append(AuditRecord(event_id=f"decision:{lookup.request_id}",
                                       event_type=AuditEventType.DECISION, event_time=at,
                                       request_id=lookup.request_id, intent=lookup,
                                       decision=decide(policy, state, lookup)))
    return records


def test_replay_under_the_live_policy_changes_nothing(store_records: Store, audit_store: ClientStore,
                                                     audit_db: str) -> None:
    store_records(_history())

    result = backtest(audit_store, audit_db, load_policy(LIVE), timedelta(days=7), until=UNTIL)

    assert result.replayed == 2 * 3 * (len(AMOUNTS) + 1)
    assert result.changed == 0 and result.by_rule == {}


def test_a_stricter_policy_reports_the_expected_changes(store_records: Store, audit_store: ClientStore,
                                                        audit_db: str) -> None:
    store_records(_history())
    stricter = compile_policy(LIVE.read_text().replace("\nrisk:", STRICTER_RULE + "\nrisk:"), "stricter")

    result = backtest(audit_store, audit_db, stricter, timedelta(days=7), until=UNTIL)

    # amounts 25-47 were allowed (<= 50) and now need approval: 3 amounts x 3 rounds x 2 agents
    allow, approval = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL
    assert result.transitions[allow, approval] == 18
    assert result.changed == 18
    changes = result.by_rule["refund-over-20-needs-approval"]
    assert changes.count == 18
    assert len(changes.examples) == 3
    assert all((c.before, c.after) == (allow, approval) for c in changes.examples)
    assert set(result.by_rule) == {"refund-up-to-50", "refund-over-20-needs-approval"}


def test_backtest_outside_the_window_replays_nothing(store_records: Store, audit_store: ClientStore,
                                                     audit_db: str) -> None:
    store_records(_history())

    result = backtest(audit_store, audit_db, load_policy(LIVE), timedelta(days=7),
                      until=UNTIL - timedelta(days=2))

    assert result.replayed == 0
