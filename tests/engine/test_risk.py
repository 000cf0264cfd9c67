"""The risk model: static factors, deviation from the agent's own history, thresholds (scenario 7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas import DecisionKind, Intent
from streams.engine import CompiledPolicy, InMemoryState, decide, evaluate
from tests.engine.helpers import intent, policy

ALLOW, APPROVAL, BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK

RISK = """rules:
  - id: refund-up-to-50
    match: {tool: payments.refund, action: create, target: ["payments:refunds", "payments:refunds:*"]}
    when: {field: params.amount, op: lte, value: 50}
    decision: ALLOW
risk:
  action_weights: {read: 0.0, create: 0.05, delete: 0.2}
  target_sensitivity:
    - {target: "payments:*", weight: 0.05}
  magnitude:
    - {field: params.amount, scale: 500, weight: 0.1}
  history:
    min_observations: 20
    amount: {field: params.amount, z: 3.0, weight: 0.6}
    new_target: {weight: 0.35}
    unusual_hour: {weight: 0.3}
    burst: {window: 1m, ratio: 10, weight: 0.6}
  thresholds:
    - {at_least: 0.9, decision: BLOCK}
    - {at_least: 0.6, decision: REQUIRE_APPROVAL}
"""
DAY0 = datetime(2025, 3, 3, tzinfo=UTC)
STATIC = {"action_type", "target_sensitivity", "magnitude:params.amount"}


def _refund(at: datetime, target: str = "payments:refunds:acme", amount: float = 20) -> Intent:
    return intent(at=at, target=target, params={"amount": amount})


def _history(compiled: CompiledPolicy, state: InMemoryState, count: int = 50) -> datetime:
    """``count`` refunds of 15-25, two an hour, 09:00-17:00 UTC, on payments:refunds:acme."""
    at = DAY0
    for index in range(count):
        day, slot = divmod(index, 16)
        at = DAY0 + timedelta(days=day, hours=9 + slot // 2, minutes=30 * (slot % 2))
        item = intent(at=at, target="payments:refunds:acme", params={"amount": 15 + index % 11})
        assert decide(compiled, state, item).decision is ALLOW
    return at


def _factors(item: Intent, compiled: CompiledPolicy, state: InMemoryState) -> tuple[DecisionKind, set[str]]:
    decision = evaluate(compiled, state, item).decision
    return decision.decision, {factor.name for factor in decision.risk.factors}


def test_amount_far_from_history_needs_approval() -> None:
    compiled, state = policy(RISK), InMemoryState()
    last = _history(compiled, state)
    item = intent(at=last + timedelta(minutes=30), target="payments:refunds:acme", params={"amount": 49})
    decision = evaluate(compiled, state, item).decision
    assert decision.decision is APPROVAL
    assert "amount_deviation" in {factor.name for factor in decision.risk.factors}
    assert decision.rules == ("refund-up-to-50", "risk>=0.6")
    usual = intent(at=last + timedelta(minutes=30), target="payments:refunds:acme", params={"amount": 20})
    assert _factors(usual, compiled, state) == (ALLOW, STATIC)


def test_new_target_at_an_unusual_hour_needs_approval() -> None:
    compiled, state = policy(RISK), InMemoryState()
    last = _history(compiled, state)
    night = datetime(last.year, last.month, last.day, 3, tzinfo=UTC) + timedelta(days=1)
    kind, names = _factors(_refund(night, "payments:refunds:globex"), compiled, state)
    assert kind is APPROVAL and {"new_target", "unusual_hour"} <= names
    kind, names = _factors(_refund(night), compiled, state)
    assert kind is ALLOW and "unusual_hour" in names  # one factor alone stays under 0.6


def test_burst_needs_approval_before_any_limit() -> None:
    compiled, state = policy(RISK), InMemoryState()
    last = _history(compiled, state)
    start = last + timedelta(hours=1)
    kinds = []
    for second in range(0, 60, 2):
        item = _refund(start + timedelta(seconds=second))
        kinds.append(decide(compiled, state, item).decision)
    assert kinds[:9] == [ALLOW] * 9
    assert kinds[9:] == [APPROVAL] * 21  # the 10th in a minute is 10x the usual (at least 1 per window)
    burst = evaluate(compiled, state, intent(at=start + timedelta(seconds=59), target="payments:refunds:acme",
                                              params={"amount": 20})).decision
    assert "burst" in {factor.name for factor in burst.risk.factors}


@pytest.mark.parametrize("observations", [0, 19])
def test_no_deviation_factor_before_min_observations(observations: int) -> None:
    compiled, state = policy(RISK), InMemoryState()
    _history(compiled, state, observations)
    night = DAY0 + timedelta(days=10, hours=3)
    kind, names = _factors(_refund(night, "payments:refunds:new", 49), compiled, state)
    assert kind is ALLOW
    assert names == STATIC


def test_score_is_capped_and_factors_explain_it() -> None:
    compiled = policy(RISK.replace("create: 0.05", "create: 1.0"))
    decision = evaluate(compiled, InMemoryState(), intent(params={"amount": 10})).decision
    assert decision.risk.score == 1.0
    assert decision.decision is BLOCK and decision.rules[-1] == "risk>=0.9"
    assert all(0 < factor.contribution <= 1 and factor.detail for factor in decision.risk.factors)


def test_only_allowed_actions_teach_history() -> None:
    compiled, state = policy(RISK), InMemoryState()
    decide(compiled, state, intent(params={"amount": 900}))  # no rule: BLOCK
    assert state.histories == {}
    decide(compiled, state, intent(params={"amount": 9}))
    (history,) = state.histories.values()
    assert history.observations == 1 and history.amount_mean == 9
