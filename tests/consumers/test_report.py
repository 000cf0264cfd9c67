"""The report's figures against a data set whose answers were worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from consumers.analytics import build_report
from consumers.audit_store import ClientStore
from schemas import AuditRecord, DecisionKind
from tests.consumers.conftest import Store
from tests.consumers.records import approval_requested, decision_record, intent, verdict_accepted

pytestmark = pytest.mark.integration
UNTIL = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
"""Recent enough for the table's TTL whenever the tests run."""
ALLOW, BLOCK, APPROVAL = DecisionKind.ALLOW, DecisionKind.BLOCK, DecisionKind.REQUIRE_APPROVAL


def _at(hours_before: float) -> datetime:
    return UNTIL - timedelta(hours=hours_before)


def _dataset() -> list[AuditRecord]:
    records: list[AuditRecord] = []

    def decide(agent: str, kind: DecisionKind, risk: float, hours_before: float, *,
               tool: str = "payments.refund", factors: dict[str, float] | None = None,
               final: bool = True, rules: tuple[str, ...] = ("r1",),
               determining: tuple[str, ...] = ()) -> None:
        records.append(decision_record(intent(_at(hours_before), agent=agent, tool=tool), kind, risk=risk,
                                       factors=factors, final=final, rules=rules, determining=determining))

    for day in range(2, 6):  # history, days before the window
        decide("agent-a", ALLOW, 0.1, 24 * day)
        decide("agent-b", ALLOW, 0.25, 24 * day)
    for hour in (1, 2, 3):  # a refund the rule allows, blocked by the limit: the limit is the reason
        decide("agent-a", BLOCK, 0.9, hour, factors={"amount_deviation": 0.6, "action_type": 0.3},
               rules=("refund-small", "per-agent"), determining=("per-agent",))
    decide("agent-a", ALLOW, 0.1, 4)
    decide("agent-b", BLOCK, 0.3, 5, tool="crm.export_customers", factors={"action_type": 0.3})  # older
    decide("agent-b", ALLOW, 0.25, 6)
    decide("agent-b", ALLOW, 0.25, 7)
    decide("agent-c", ALLOW, 0.5, 8)
    decide("agent-c", ALLOW, 0.5, 9)
    decide("agent-a", BLOCK, 0.9, -1)  # after the window
    decide("agent-a", BLOCK, 0.9, 24 * 40)  # before the history
    for index, seconds in enumerate((10, 20, 30, 40, 50)):
        asked = intent(_at(10 + index), agent="agent-d")
        records += [decision_record(asked, APPROVAL, risk=0.65, final=False), approval_requested(asked),
                    verdict_accepted(asked, timedelta(seconds=seconds))]
    expired, pending = intent(_at(2), agent="agent-d"), intent(_at(0.1), agent="agent-d")
    for asked in (expired, pending):
        records += [decision_record(asked, APPROVAL, risk=0.65, final=False), approval_requested(asked)]
    return records


def test_report_figures_match_hand_computed_ones(store_records: Store, audit_store: ClientStore,
                                                 audit_db: str) -> None:
    records = _dataset()
    store_records(records)
    store_records(records[-3:])  # a batch stored twice counts once

    report = build_report(audit_store, audit_db, timedelta(hours=24), until=UNTIL)

    assert sorted(report.decisions) == [
        ("ALLOW", True, 5), ("BLOCK", True, 4), ("REQUIRE_APPROVAL", False, 7)]
    assert report.blocked_agents == [("agent-a", 3), ("agent-b", 1)]
    assert report.blocked_tools == [("payments.refund", 3), ("crm.export_customers", 1)]
    assert report.block_reasons == [("per-agent", 3), ("(not recorded)", 1)]
    approvals = report.approvals
    assert (approvals.decided, approvals.expired, approvals.pending) == (5, 1, 1)
    assert approvals.p50_s == pytest.approx(30.0)
    assert approvals.p95_s == pytest.approx(48.0)  # 40 + 0.8 * (50 - 40), linear interpolation
    assert report.risk == [("0.0-0.2", 1), ("0.2-0.4", 3), ("0.4-0.6", 2), ("0.6-0.8", 7), ("0.8-1.0", 3)]
    assert [d.agent_id for d in report.deviating] == ["agent-a", "agent-b"]
    first, second = report.deviating
    assert (first.decisions, first.top_factor) == (4, "amount_deviation")
    assert first.recent_risk == pytest.approx(0.7)
    assert first.history_risk == pytest.approx(0.1)
    assert first.deviation == pytest.approx(0.6)
    assert second.deviation == pytest.approx((0.3 + 0.5) / 3 - 0.25)
    assert second.top_factor == "action_type"


def test_empty_window_reports_zeros(audit_store: ClientStore, audit_db: str) -> None:
    report = build_report(audit_store, audit_db, timedelta(hours=1), until=UNTIL)

    assert report.decisions == [] and report.blocked_agents == [] and report.deviating == []
    assert report.block_reasons == []
    assert report.approvals.decided == 0 and report.approvals.p50_s is None
    assert [count for _, count in report.risk] == [0] * 5


def test_window_edges_are_exact_to_the_millisecond_and_count_each_event_once(
    store_records: Store, audit_store: ClientStore, audit_db: str,
) -> None:
    until = UNTIL + timedelta(seconds=30, milliseconds=250)  # mid-minute: the edges come from the events
    since = until - timedelta(hours=1)
    ms = timedelta(milliseconds=1)
    inside = [since, since + timedelta(seconds=20), until - timedelta(minutes=30), until - ms]
    outside = [since - ms, until, until + timedelta(seconds=10)]
    records = [decision_record(intent(at, agent="agent-e"), ALLOW, risk=0.5, after=timedelta(0))
               for at in inside + outside]
    store_records(records + records[:2])  # duplicates inside one insert
    store_records(records[2:4])  # and across inserts

    report = build_report(audit_store, audit_db, timedelta(hours=1), until=until)

    assert report.decisions == [("ALLOW", True, len(inside))]
    assert report.risk[2] == ("0.4-0.6", len(inside))


def test_block_reasons_count_each_block_once_by_what_determined_it(
    store_records: Store, audit_store: ClientStore, audit_db: str,
) -> None:
    until = UNTIL + timedelta(seconds=30)  # mid-minute: whole minutes from the rollup, edges from events
    since = until - timedelta(hours=1)
    spree = [decision_record(intent(since + timedelta(minutes=m, seconds=5), agent="spree"), BLOCK,
                             rules=("support-refund-up-to-50", "refunds-per-agent"),
                             determining=("refunds-per-agent",), after=timedelta(0)) for m in range(0, 60, 2)]
    denied = [decision_record(intent(since + timedelta(minutes=m), agent="fin"), BLOCK, rules=("big",),
                              determining=("approval_denied", "big"), after=timedelta(0)) for m in (1, 3)]
    allowed = decision_record(intent(since + timedelta(minutes=5), agent="ok"), ALLOW,
                              rules=("support-refund-up-to-50",), determining=("support-refund-up-to-50",))
    records = [*spree, *denied, allowed]
    store_records(records)
    store_records(records[:5])  # stored twice: counted once

    report = build_report(audit_store, audit_db, timedelta(hours=1), until=until)

    assert report.block_reasons == [("refunds-per-agent", len(spree)), ("approval_denied + big", 2)]
    assert ("BLOCK", True, len(spree) + 2) in report.decisions
