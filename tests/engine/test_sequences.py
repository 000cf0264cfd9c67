"""Sequence rules: earlier actions counted by their final decision, event-time windows, keys, bounded
trails, evaluation errors, approvals and the policy checks."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from schemas import DecisionKind
from streams.engine import (
    InMemoryState,
    PolicyError,
    TrailChange,
    TrailState,
    apply,
    compile_policy,
    decide,
    evaluate,
)
from streams.engine.state import MAX_HELD, MAX_TRAIL
from tests.engine.helpers import intent, policy

ALLOW, APPROVAL, BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK
MINUTE = timedelta(minutes=1)

BOTH = """default: ALLOW
rules:
  - {id: big-refund, match: {tool: payments.refund}, when: {field: params.amount, op: gt, value: 100},
     decision: BLOCK}
sequences:
  - id: after-any-refund
    after: {match: {tool: payments.refund}, decision: [ALLOW, BLOCK]}
    match: {tool: payments.transfer}
    when: {field: params.amount, op: gt, value: 10}
    within: 10m
    decision: REQUIRE_APPROVAL
    approval: {group: fraud, quorum: 2}
"""


def test_an_earlier_action_counts_by_its_final_decision() -> None:
    compiled = policy(BOTH)
    for amount in (5, 500):  # an ALLOWed and a BLOCKed refund both count here
        state = InMemoryState()
        decide(compiled, state, intent(params={"amount": amount}))
        later = decide(compiled, state, intent(tool="payments.transfer", at=MINUTE, params={"amount": 50}))
        assert later.decision is APPROVAL and later.determining == ("after-any-refund",)
        assert compiled.approval_for(later.rules).group == "fraud"


def test_the_later_action_must_meet_its_condition() -> None:
    compiled, state = policy(BOTH), InMemoryState()
    decide(compiled, state, intent(params={"amount": 5}))
    small = decide(compiled, state, intent(tool="payments.transfer", at=MINUTE, params={"amount": 10}))
    assert small.decision is ALLOW and small.rules == ()
    broken = decide(compiled, state, intent(tool="payments.transfer", at=MINUTE, params={}))
    assert broken.decision is BLOCK and broken.determining == ("after-any-refund",)
    assert "evaluation error" in broken.reasons[-1]


def test_an_earlier_action_whose_condition_fails_to_evaluate_counts() -> None:
    compiled, state = policy("""default: ALLOW
sequences:
  - id: s
    after: {match: {tool: a}, when: {field: params.n, op: gt, value: 1}}
    match: {tool: b}
    within: 1m
"""), InMemoryState()
    decide(compiled, state, intent(tool="a", params={"n": "not a number"}))
    assert decide(compiled, state, intent(tool="b", at=timedelta(seconds=1))).decision is BLOCK


def test_a_pending_approval_and_evaluate_record_nothing() -> None:
    compiled, state = policy(BOTH), InMemoryState()
    result = evaluate(compiled, state, intent(params={"amount": 5}))
    assert [type(change) for change in result.changes] == [TrailChange]
    assert state.trails == {}
    apply(state, result.changes, APPROVAL)
    assert state.trails == {}
    apply(state, result.changes, ALLOW)
    assert list(state.trails) == ["after-any-refund|agent=agent-1"]


def _late_exact(times: list[int], probe: int, within: int) -> bool:
    return any(probe - within < t <= probe for t in times)


@pytest.mark.parametrize("seed", range(20))
def test_a_trail_stays_bounded_and_answers_exactly_up_to_one_window_late(seed: int) -> None:
    rng = random.Random(seed)
    within = 1_000
    trail, seen, now = TrailState(), [], 0
    for _ in range(400):
        now += rng.randrange(0, 200)
        at = now - (rng.randrange(0, within) if rng.random() < 0.3 else 0)
        trail.add(at, within)
        seen.append(at)
        assert len(trail.times_ms) <= 4 < MAX_TRAIL
        newest = max(seen)
        for probe in (newest, newest - rng.randrange(0, within), newest + rng.randrange(0, 2 * within)):
            found = trail.latest(probe, within)
            assert (found is not None) == _late_exact(seen, probe, within)
    assert TrailState.from_bytes(trail.to_bytes()) == trail
    assert len(trail.to_bytes()) <= 5 + 8 * 4


@pytest.mark.parametrize(("text", "line", "message"), [
    ("sequences:\n  - id: s\n    after: {decision: REQUIRE_APPROVAL}\n    within: 1m\n", 3,
     "not a final decision"),
    ("rules:\n  - {id: s, decision: ALLOW}\nsequences:\n  - id: s\n    after: {}\n    within: 1m\n", 4,
     "duplicate id"),
    ("sequences:\n  - id: s\n    after: {}\n    within: 1m\n    approval: {group: g}\n", 5,
     "approval is only allowed"),
    ("sequences:\n  - id: s\n    after: {when: {schedule: nope}}\n    within: 1m\n", 3, "unknown schedule"),
    ("sequences:\n  - id: s\n    after: {}\n    within: 32d\n", 4, "longer than the largest"),
    ("sequences:\n  - id: s\n    after: {}\n    within: 1m\n    key: fleet\n", 5, "key"),
    ("sequences:\n  - id: default\n    after: {}\n    within: 1m\n", 2, "reserved"),
])
def test_a_bad_sequence_rule_is_rejected_on_its_line(text: str, line: int, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        compile_policy("policy: p\n" + text, "bad.yaml")
    issues = caught.value.issues
    assert any(issue.line == line + 1 and message in issue.message for issue in issues), issues


def test_sequence_rules_come_after_limits_and_before_risk() -> None:
    compiled = policy("""rules: [{id: r, decision: ALLOW}]
limits: [{id: l, window: 1m, count: 1}]
sequences: [{id: s, after: {}, within: 1m}]
risk: {thresholds: [{at_least: 0.9, decision: BLOCK}]}
""")
    state = InMemoryState()
    assert decide(compiled, state, intent()).decision is ALLOW
    second = decide(compiled, state, intent(at=timedelta(seconds=1)))
    assert second.rules == ("r", "l", "s") and second.determining == ("l", "s")
    assert (compiled.limits[0].order, compiled.sequences[0].order) == (1, 2)
    assert compiled.risk_order == 3


def test_a_held_action_counts_until_released_and_the_holds_are_capped() -> None:
    trail = TrailState()
    trail.hold(1_000, 7, 60_000)
    trail.hold(1_000, 7, 60_000)  # once per token
    assert trail.latest(2_000, 60_000) == 1_000 and list(trail.held_tokens) == [7]
    assert TrailState.from_bytes(trail.to_bytes()) == trail
    trail.release(7)
    assert trail.latest(2_000, 60_000) is None and trail.times_ms.tolist() == []
    for token in range(MAX_HELD + 1):
        trail.hold(token, token, 60_000)
    assert len(trail.held_ms) == MAX_HELD and trail.times_ms.tolist() == [0]  # the oldest is recorded
