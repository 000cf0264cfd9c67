"""The demo's running figures."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from rich.console import Console

from schemas import Decision, DecisionKind
from sluicegate.demo.stats import DemoStats, percentile


def _decision(
    kind: DecisionKind, agent: str, reason: str = "", rules: tuple[str, ...] = (),
    determining: tuple[str, ...] = (),
) -> Decision:
    return Decision(
        request_id=uuid.uuid4(),
        agent_id=agent,
        decision=kind,
        reasons=(reason,) if reason else (),
        rules=rules,
        determining=determining,
        decided_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([], 0.5) == 0.0
    assert percentile([7.0], 0.99) == 7.0


def test_record_counts_outcomes_and_offenders() -> None:
    stats = DemoStats()
    stats.record(_decision(DecisionKind.ALLOW, "a"), "crm.get_account", 2.0, now_s=100.0)
    stats.record(_decision(DecisionKind.BLOCK, "b", "rule x"), "payments.refund", 4.0, now_s=101.0)
    stats.record(_decision(DecisionKind.BLOCK, "b", "rule x"), "payments.refund", 6.0, now_s=102.0)
    assert stats.total == 3
    assert stats.outcomes[DecisionKind.BLOCK] == 2
    assert stats.blocked_agents.most_common(1) == [("b", 2)]
    assert stats.blocked_tools["payments.refund"] == 2
    assert stats.reasons["rule x"] == 2


def test_rate_forgets_old_decisions() -> None:
    stats = DemoStats()
    for second in range(10):
        stats.record(_decision(DecisionKind.ALLOW, "a"), "t", 1.0, now_s=float(second))
    assert stats.rate() == 6 / 5.0


def test_render_shows_the_figures() -> None:
    stats = DemoStats()
    stats.record(_decision(DecisionKind.BLOCK, "rogue", "refund too large"), "payments.refund", 3.0, 1.0)
    console = Console(width=120, record=True)
    console.print(stats.render("demo"))
    text = console.export_text()
    assert "rogue" in text and "payments.refund" in text and "refund too large" in text


def test_reviewed_decisions_count_as_approval_waits_not_latency() -> None:
    stats = DemoStats()
    stats.offer(1.0)
    stats.offer(1.0)
    stats.pending(4.0)  # the REQUIRE_APPROVAL: a decision 4 ms after the intent
    assert stats.awaiting_review == 1 and stats.in_flight == 2
    stats.record(_decision(DecisionKind.ALLOW, "a", "approval_granted: approved by lena"), "t", 900.0, 1.0,
                 reviewed=True)
    stats.pending(6.0)
    stats.record(_decision(DecisionKind.BLOCK, "a", "approval_expired: no final decision by …"), "t", 5.0,
                 1.0, reviewed=True)
    stats.record(_decision(DecisionKind.ALLOW, "a"), "t", 3.0, 1.0)
    assert stats.approvals == {"granted": 1, "expired": 1}
    assert stats.approval_waits_ms == [900.0, 5.0]
    assert stats.latencies_ms == [4.0, 6.0, 3.0]
    assert stats.awaiting_review == 0 and stats.reviews == 2


def test_a_run_short_of_its_rate_says_why() -> None:
    stats = DemoStats(asked_rate=100.0)
    for tick in range(250):  # 50/s offered over the window, while the process burns a whole core
        stats.offer(tick / 50)
    stats.sample_cpu(0.0, cpu_s=0.0)
    stats.sample_cpu(5.0, cpu_s=4.9)
    assert "uses 98% of a core" in stats.shortfall()
    assert "wait for a decision" in stats.shortfall()  # 250 offered, none decided
    for _ in range(250):
        stats.record(_decision(DecisionKind.ALLOW, "a"), "t", 1.0, 4.9)
    assert "wait for a decision" not in stats.shortfall()
    stats.ended(2.5)  # over the whole run: 100/s offered and decided, as asked
    assert stats.shortfall() == ""
    assert stats.offered_rate() == 100.0 and stats.rate() == 100.0


def test_waiting_on_a_reviewer_is_not_a_shortfall() -> None:
    stats = DemoStats(asked_rate=10.0)
    for tick in range(50):
        stats.offer(tick / 10)
        stats.pending(2.0)
    assert stats.in_flight == 50 and stats.awaiting_review == 50
    assert "wait for a decision" not in stats.shortfall()


def test_a_block_counts_under_what_determined_it_not_every_rule_that_applied() -> None:
    """The refund spree: a rule allows each refund, the per-agent limit blocks it."""
    stats = DemoStats()
    spree = _decision(DecisionKind.BLOCK, "rogue", "support-refund-up-to-50: A refund of up to 50 is fine",
                      rules=("support-refund-up-to-50", "refunds-per-agent-per-10m"),
                      determining=("refunds-per-agent-per-10m",))
    for second in range(3):
        stats.record(spree, "payments.refund", 2.0, float(second))
    denied = _decision(DecisionKind.BLOCK, "fin", "approval_denied", determining=("approval_denied", "big"))
    stats.record(denied, "payments.create", 900.0, 4.0)
    assert stats.reasons == {"refunds-per-agent-per-10m": 3, "approval_denied + big": 1}
    console = Console(width=120, record=True)
    console.print(stats.render("demo"))
    text = console.export_text()
    assert "refunds-per-agent-per-10m" in text and "support-refund-up-to-50" not in text
