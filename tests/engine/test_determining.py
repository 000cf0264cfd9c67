"""``determining``: what decided, besides everything that applied (``rules``), case by case."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas import ApprovalVerdict, DecisionKind, VerdictKind
from streams.engine import (
    AGENT_SCOPES,
    Context,
    InMemoryState,
    PolicyError,
    apply,
    combine_hops,
    decide,
    decide_raw,
    evaluate_hop,
    evaluate_intent,
    evaluate_raw,
)
from streams.stages.approval_machine import (
    ReviewerDirectory,
    apply_verdict,
    expire,
    final_decision,
    new_request,
    open_pending,
)
from tests.engine.helpers import T0, intent, policy

ALLOW, APPROVAL, BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK

RULES = """rules:
  - {id: small, match: {tool: payments.refund}, when: {field: params.amount, op: lte, value: 50},
     decision: ALLOW}
  - {id: refunds, match: {tool: payments.refund}, decision: ALLOW}
  - {id: big, match: {tool: payments.refund}, when: {field: params.amount, op: gt, value: 100},
     decision: REQUIRE_APPROVAL}
  - {id: huge, match: {tool: payments.refund}, when: {field: params.amount, op: gt, value: 1000},
     decision: BLOCK}
  - {id: vip, match: {tool: payments.refund}, when: {field: params.vip, op: eq, value: true, default: false},
     decision: REQUIRE_APPROVAL}
"""
COUNT = """limits:
  - {id: two-a-minute, match: {tool: payments.refund}, window: 1m, count: 2, decision: BLOCK}
"""
ASK = """limits:
  - {id: ask-after-one, match: {tool: payments.refund}, window: 1m, count: 1, decision: REQUIRE_APPROVAL}
"""
# Sums that one refund of 10 exceeds on its own (so they apply even when nothing was counted).
CAP = "  - {id: cap, match: {tool: payments.refund}, window: 1m, sum: params.amount, max: 5}\n"
ASK_SUM = ("  - {id: ask, match: {tool: payments.refund}, window: 1m, sum: params.amount, max: 5,"
           " decision: REQUIRE_APPROVAL}\n")
RISK = """risk:
  action_weights: {delete: 0.7}
  thresholds:
    - {at_least: 0.9, decision: BLOCK}
    - {at_least: 0.6, decision: REQUIRE_APPROVAL}
"""


def _run(text: str, intents: list[dict[str, Any]]) -> tuple[DecisionKind, tuple[str, ...], tuple[str, ...]]:
    """Decide the intents in order (a second apart); the last one's decision, rules and determining."""
    compiled, state = policy(text), InMemoryState()
    decision = None
    for index, fields in enumerate(intents):
        decision = decide(compiled, state, intent(at=timedelta(seconds=index), **fields))
    assert decision is not None
    return decision.decision, decision.rules, decision.determining


REFUND = {"params": {"amount": 10}}


@pytest.mark.parametrize(("text", "intents", "expected"), [
    # rules: every rule whose decision is the final one, in policy order
    (RULES, [REFUND], (ALLOW, ("small", "refunds"), ("small", "refunds"))),
    (RULES, [{"params": {"amount": 500}}], (APPROVAL, ("refunds", "big"), ("big",))),
    (RULES, [{"params": {"amount": 500, "vip": True}}],
     (APPROVAL, ("refunds", "big", "vip"), ("big", "vip"))),
    (RULES, [{"params": {"amount": 5000, "vip": True}}],
     (BLOCK, ("refunds", "big", "huge", "vip"), ("huge",))),
    # the default: only when no rule applied, and only when it is the decision
    ("default: BLOCK\n" + RULES, [{"tool": "crm.export"}], (BLOCK, (), ("default",))),
    ("default: ALLOW\n" + RULES, [{"tool": "crm.export"}], (ALLOW, (), ("default",))),
    ("default: ALLOW\n" + ASK, [REFUND, REFUND], (APPROVAL, ("ask-after-one",), ("ask-after-one",))),
    ("default: BLOCK\nlimits:\n" + ASK_SUM, [REFUND], (BLOCK, ("ask",), ("default",))),
    ("default: BLOCK\nlimits:\n" + CAP, [REFUND], (BLOCK, ("cap",), ("default", "cap"))),
    # limits: the one whose decision is the final one determines (the 3rd refund in a minute: the 51st)
    (RULES + COUNT, [REFUND] * 3, (BLOCK, ("small", "refunds", "two-a-minute"), ("two-a-minute",))),
    ("default: ALLOW\nlimits:\n" + CAP + ASK_SUM, [REFUND], (BLOCK, ("cap", "ask"), ("cap",))),
    (RULES + "limits:\n" + ASK_SUM + CAP, [REFUND], (BLOCK, ("small", "refunds", "ask", "cap"), ("cap",))),
    # risk thresholds, named risk>=X, after rules and limits
    ("rules:\n  - {id: deletes, match: {action: delete}, decision: ALLOW}\n" + RISK, [{"action": "delete"}],
     (APPROVAL, ("deletes", "risk>=0.6"), ("risk>=0.6",))),
    ("rules:\n  - {id: deletes, match: {action: delete}, decision: REQUIRE_APPROVAL}\n" + RISK,
     [{"action": "delete"}], (APPROVAL, ("deletes", "risk>=0.6"), ("deletes", "risk>=0.6"))),
    ("rules:\n  - {id: deletes, match: {action: delete}, decision: ALLOW}\n"
     + RISK.replace("delete: 0.7", "delete: 0.95"), [{"action": "delete"}],
     (BLOCK, ("deletes", "risk>=0.9"), ("risk>=0.9",))),
    # errors: a rule or limit that cannot be evaluated BLOCKs and names itself
    (RULES, [{"params": {}}], (BLOCK, ("small", "refunds", "big", "huge"), ("small", "big", "huge"))),
    ("rules:\n  - {id: ok, decision: ALLOW}\nlimits:\n"
     "  - {id: spend, match: {tool: payments.refund}, window: 1h, sum: params.amount, max: 100}\n",
     [{"params": {"amount": "ten"}}], (BLOCK, ("ok", "spend"), ("spend",))),
])
def test_determining(text: str, intents: list[dict[str, Any]],
                     expected: tuple[DecisionKind, tuple[str, ...], tuple[str, ...]]) -> None:
    kind, rules, determining = _run(text, intents)
    assert (kind, sorted(rules), determining) == (expected[0], sorted(expected[1]), expected[2])


def test_without_a_rule_a_marker_determines() -> None:
    compiled = policy(RULES)
    raw = intent(params={"amount": 10}).model_dump_json().encode()
    assert decide_raw(compiled, InMemoryState(), b"{not json").determining == ("invalid_intent",)
    assert decide_raw(None, InMemoryState(), raw).determining == ("no_policy",)
    too_big = b'{"request_id": "00000000-0000-4000-8000-000000000001", "pad": "' + b"x" * 140_000 + b'"}'
    oversized = decide_raw(compiled, InMemoryState(), too_big)
    assert oversized.determining == ("invalid_intent",) and "the limit is 131072" in oversized.reasons[0]
    arrived = T0 - timedelta(minutes=10)
    skewed = evaluate_raw(compiled, InMemoryState(), raw, Context(
        now_ms=int(T0.timestamp() * 1000), arrived_ms=int(arrived.timestamp() * 1000), max_skew_ms=300_000))
    assert (skewed.decision.decision, skewed.decision.determining) == (BLOCK, ("event_time_skew",))


def test_an_intent_reached_after_its_agent_stopped_waiting_is_blocked_and_counts_nothing() -> None:
    compiled = policy(RULES + COUNT)
    now_ms = int(T0.timestamp() * 1000)
    late = intent(params={"amount": 10}, wait_until=T0 - timedelta(milliseconds=1))
    result = evaluate_intent(compiled, InMemoryState(), late, Context(now_ms=now_ms))
    assert (result.decision.decision, result.decision.determining) == (BLOCK, ("wait_expired",))
    assert result.changes == () and "stopped waiting" in result.decision.reasons[0]
    in_time = intent(params={"amount": 10}, wait_until=T0)
    counted = evaluate_intent(compiled, InMemoryState(), in_time, Context(now_ms=now_ms))
    assert counted.decision.decision is ALLOW and counted.changes
    replayed = evaluate_intent(compiled, InMemoryState(), late)  # a replay has no clock: as decided then
    assert replayed.decision.decision is ALLOW


def test_an_engine_failure_determines_as_engine_error() -> None:
    compiled = policy("default: ALLOW\n" + ASK)
    failed = evaluate_intent(compiled, None, intent())  # type: ignore[arg-type]  # no state: fails closed
    assert failed.decision.decision is BLOCK
    assert failed.decision.determining == ("engine_error",)
    assert failed.decision.reasons[0].startswith("engine_error: ")


FLEET = """rules:
  - {id: refunds, match: {tool: payments.refund}, decision: ALLOW}
limits:
  - {id: budget, match: {tool: payments.refund}, key: fleet, window: 1h, sum: params.amount, max: 100}
  - {id: per-agent, match: {tool: payments.refund}, window: 1h, count: 5}
"""


def test_shared_limits_checked_hop_by_hop_determine_as_in_one_evaluation() -> None:
    compiled = policy(FLEET)
    whole, local, shared = InMemoryState(), InMemoryState(), InMemoryState()
    seen = []
    for index, amount in enumerate([60, 30, 20, 5]):
        item = intent(agent_id=f"a{index}", at=timedelta(minutes=index), params={"amount": amount})
        expected = decide(compiled, whole, item)
        now_ms = int(T0.timestamp() * 1000) + index
        part = evaluate_intent(compiled, local, item, Context(now_ms=now_ms, scopes=AGENT_SCOPES))
        [key] = {change.key for change in part.shared}
        hop = evaluate_hop(compiled, shared, item, key)
        final = combine_hops(compiled, part.decision, part.applied, hop.applied, item, now_ms)
        assert (final.decision, final.rules, final.determining) == \
            (expected.decision, expected.rules, expected.determining)
        assert final.decided_at == datetime.fromtimestamp(now_ms / 1000, UTC)
        if final.decision is ALLOW:
            apply(local, part.changes)
            apply(shared, hop.changes)
        seen.append(final.determining)
    assert seen == [("refunds",), ("refunds",), ("budget",), ("refunds",)]


def test_a_hop_without_the_policy_blocks_as_policy_unavailable() -> None:
    compiled = policy(FLEET)
    item = intent(params={"amount": 1})
    part = evaluate_intent(compiled, InMemoryState(), item, Context(now_ms=0, scopes=AGENT_SCOPES))
    hop = evaluate_hop(None, InMemoryState(), item, "budget|fleet", compiled.version)
    assert [entry.id for entry in hop.applied] == ["policy_unavailable"] and hop.changes == ()
    final = combine_hops(None, part.decision, part.applied, hop.applied, item, 0)
    assert (final.decision, final.determining, final.rules) == (BLOCK, ("policy_unavailable",), ("refunds",))
    assert final.reasons[-1] == f"policy_unavailable: version {compiled.version} is no longer known"


def _verdict(request: Any, kind: VerdictKind) -> ApprovalVerdict:
    return ApprovalVerdict(request_id=request.request_id, intent_digest=request.intent_digest,
                           reviewer="lena", verdict=kind, decided_at=T0)


@pytest.mark.parametrize(("how", "kind", "marker"), [
    (VerdictKind.APPROVE, ALLOW, "approval_granted"),
    (VerdictKind.DENY, BLOCK, "approval_denied"),
    (None, BLOCK, "approval_expired"),
])
def test_an_approvals_final_names_how_it_ended_then_what_required_it(
    how: VerdictKind | None, kind: DecisionKind, marker: str,
) -> None:
    item = intent(params={"amount": 500})
    pending = decide(policy(RULES), InMemoryState(), item)
    assert (pending.decision, pending.determining) == (APPROVAL, ("big",))
    request = new_request(item, pending, now=T0)
    assert request.determining == ("big",)
    state = open_pending(request)
    if how is None:
        expired = expire(state, T0 + timedelta(hours=1))
        assert expired is not None
        state, resolution = expired
    else:
        reviewers = ReviewerDirectory({"reviewers": frozenset({"lena"})})
        result = apply_verdict(state, _verdict(request, how), reviewers, T0)
        assert result.resolution is not None
        state, resolution = result.state, result.resolution
    final = final_decision(state, resolution, T0)
    assert (final.decision, final.determining, final.rules) == (kind, (marker, "big"), ("refunds", "big"))


def test_policies_cannot_use_the_markers_as_ids() -> None:
    for marker in ("default", "no_policy", "approval_denied"):
        with pytest.raises(PolicyError, match=f"id '{marker}' is reserved"):
            policy(f"rules:\n  - {{id: {marker}, decision: ALLOW}}\n")


def test_older_decisions_without_determining_still_parse() -> None:
    decision = decide(policy(RULES), InMemoryState(), intent(params={"amount": 10}))
    stored = json.loads(decision.model_dump_json())
    del stored["determining"]
    assert type(decision).model_validate(stored).determining == ()
