"""Sliding windows in event time: exact boundaries, only allowed actions count, keys and scopes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from schemas import DecisionKind
from streams.engine import (
    AGENT_SCOPES,
    Context,
    HistoryState,
    InMemoryState,
    LimitScope,
    WindowChange,
    WindowState,
    apply,
    combine_hops,
    decide,
    evaluate,
    evaluate_hop,
    evaluate_intent,
)
from tests.engine.helpers import intent, policy

ALLOW, APPROVAL, BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK

COUNT = """default: ALLOW
limits:
  - id: three-per-minute
    match: {tool: payments.refund}
    window: 1m
    count: 3
"""

FLEET = """rules:
  - id: refund-small
    match: {tool: payments.refund}
    when: {field: params.amount, op: lte, value: 100}
    decision: ALLOW
limits:
  - id: fleet-budget
    match: {tool: payments.refund}
    key: fleet
    window: 24h
    sum: params.amount
    max: 150
    decision: REQUIRE_APPROVAL
  - id: per-agent
    match: {tool: payments.refund}
    window: 10m
    count: 2
"""


def test_count_limit_the_n_plus_first_is_blocked() -> None:
    compiled, state = policy(COUNT), InMemoryState()
    got = [decide(compiled, state, intent(at=timedelta(seconds=s))).decision for s in (0, 10, 20, 30)]
    assert got == [ALLOW, ALLOW, ALLOW, BLOCK]


@pytest.mark.parametrize(("offset_ms", "expected"), [(59_999, BLOCK), (60_000, ALLOW)])
def test_an_action_exactly_one_window_old_is_out(offset_ms: int, expected: DecisionKind) -> None:
    compiled, state = policy(COUNT), InMemoryState()
    for _ in range(3):
        assert decide(compiled, state, intent()).decision is ALLOW
    late = intent(at=timedelta(milliseconds=offset_ms))
    decision = decide(compiled, state, late)
    assert decision.decision is expected
    if expected is BLOCK:
        assert decision.rules == ("three-per-minute",)
        assert "3 actions already in 1m (at most 3)" in decision.reasons[-1]


def test_blocked_attempts_consume_nothing() -> None:
    no_big = "rules:\n  - id: no-big\n"
    no_big += "    when: {field: params.amount, op: gt, value: 10}\n    decision: BLOCK"
    compiled = policy(COUNT.replace("default: ALLOW", "default: ALLOW\n" + no_big))
    state = InMemoryState()
    for _ in range(5):
        assert decide(compiled, state, intent(params={"amount": 99})).decision is BLOCK
    got = [decide(compiled, state, intent(params={"amount": 1})).decision for _ in range(4)]
    assert got == [ALLOW, ALLOW, ALLOW, BLOCK]


def test_evaluate_does_not_touch_state() -> None:
    compiled, state = policy(COUNT), InMemoryState()
    for _ in range(10):
        evaluate(compiled, state, intent())
    assert state.windows == {}


def test_fleet_sum_budget_across_agents() -> None:
    compiled, state = policy(FLEET), InMemoryState()
    first = decide(compiled, state, intent(agent_id="a", params={"amount": 100}))
    exact = decide(compiled, state, intent(agent_id="b", params={"amount": 50}))  # sum 150: not past max
    past = decide(compiled, state, intent(agent_id="c", params={"amount": 0.01}))
    assert (first.decision, exact.decision, past.decision) == (ALLOW, ALLOW, APPROVAL)
    assert past.rules == ("refund-small", "fleet-budget")
    assert "fleet-budget|fleet" in state.windows
    nextday = decide(compiled, state, intent(agent_id="c", at=timedelta(hours=24), params={"amount": 100}))
    assert nextday.decision is ALLOW


def test_sum_limit_with_a_missing_field_blocks() -> None:
    decision = evaluate(policy(FLEET), InMemoryState(), intent(params={})).decision
    assert decision.decision is BLOCK
    assert any(reason.startswith("fleet-budget: evaluation error") for reason in decision.reasons)


def test_keys_are_strings_starting_with_the_limit_id() -> None:
    compiled = policy("""default: ALLOW
limits:
  - {id: by-pair, key: [agent, tool], window: 1h, count: 9}
  - {id: by-target, key: target, window: 1h, count: 9}
  - {id: by-role, key: role, window: 1h, count: 9}
""")
    changes = evaluate(compiled, InMemoryState(), intent(agent_id="a|b=c")).changes
    windows = {c.limit_id: c for c in changes if isinstance(c, WindowChange)}
    assert windows["by-pair"].key == "by-pair|agent=a%7Cb%3Dc|tool=payments.refund"
    assert windows["by-pair"].scope is LimitScope.AGENT
    assert windows["by-target"].key == "by-target|target=payments:refunds"
    assert windows["by-role"].scope is LimitScope.SHARED
    assert compiled.has_fleet_limits


def test_scopes_split_and_combine_like_one_evaluation() -> None:
    compiled = policy(FLEET)
    whole, local, shared = InMemoryState(), InMemoryState(), InMemoryState()
    for index, amount in enumerate([60, 60, 60, 20, 20, 20]):
        item = intent(agent_id=f"agent-{index % 2}", at=timedelta(minutes=index), params={"amount": amount})
        expected = decide(compiled, whole, item)
        part = evaluate_intent(compiled, local, item, Context(scopes=AGENT_SCOPES))
        assert {c.scope for c in part.shared} <= {LimitScope.SHARED}
        assert bool(part.shared) is (part.decision.decision is not BLOCK)  # BLOCKed at once, else hops
        hops = [evaluate_hop(compiled, shared, item, key) for key in sorted({c.key for c in part.shared})]
        hits = tuple(hit for hop in hops for hit in hop.applied)
        merged = combine_hops(compiled, part.decision, part.applied, hits, item, item.occurred_at_ms) \
            if part.shared else part.decision
        assert merged == expected
        if merged.decision is ALLOW:
            apply(local, part.changes)
            apply(shared, [change for hop in hops for change in hop.changes])


def test_window_state_round_trips_compactly() -> None:
    window = WindowState()
    for at in range(0, 50_000, 1000):
        window.add(at, float(at) / 3, 60_000, None)
    window.add(500, 1.5, 60_000, None)  # out of order: kept sorted
    copy = WindowState.from_bytes(window.to_bytes())
    assert copy == window and list(copy.times_ms) == sorted(copy.times_ms)
    assert len(window.to_bytes()) == 6 + 16 * 51
    window.add(200_000, 1.0, 60_000, None)
    assert list(window.times_ms) == [200_000]
    capped = WindowState()
    for at in range(10):
        capped.add(at, None, 60_000, 3)
    assert list(capped.times_ms) == [7, 8, 9]


def test_history_state_round_trips() -> None:
    history = HistoryState()
    for index in range(30):
        history.observe(index * 60_000, 20.0 + index % 3, index % 5, 60_000)
    copy = HistoryState.from_bytes(history.to_bytes())
    assert copy == history
    assert copy.observations == 30 and len(copy.targets) == 5
    assert copy.amount_mean == pytest.approx(21.0, abs=0.1)


def test_a_late_action_is_judged_by_every_window_containing_it() -> None:
    compiled, state = policy(COUNT), InMemoryState()
    for seconds in (0, 20, 40):
        assert decide(compiled, state, intent(at=timedelta(seconds=seconds))).decision is ALLOW
    # 59 s before the first: the window (-59 s, 1 s) would hold it and the action at 0 s only, but
    # the window (-20 s, 40 s] holds all four: the late action is the 4th in it.
    assert decide(compiled, state, intent(at=timedelta(seconds=-19))).decision is BLOCK
    assert decide(compiled, state, intent(at=timedelta(seconds=-61))).decision is ALLOW


def test_decimal_money_reaches_max_exactly() -> None:
    compiled, state = policy(FLEET.replace("max: 150", "max: 0.6")), InMemoryState()
    amounts = [0.1, 0.2, 0.3, 0.01]
    got = [decide(compiled, state, intent(agent_id=f"a{i}", params={"amount": a})).decision
           for i, a in enumerate(amounts)]
    assert got == [ALLOW, ALLOW, ALLOW, APPROVAL]
