"""Sequence rules through the deciding stages without Kafka: an earlier action is recorded for its final
decision whichever stage makes it (decided alone, after the shared-limit hops, after an approval)."""

from __future__ import annotations

from datetime import timedelta

from schemas import Decision, DecisionKind, VerdictKind
from streams.engine import compile_policy
from tests.streams.harness import make_intent
from tests.streams.test_approval_stage import DIRECTORY as REVIEWERS
from tests.streams.test_approval_stage import EVENT_T0, WALL_T0, finals, ms, verdict
from tests.streams.test_stages import Pump

ALLOW, APPROVAL, BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK
POLICY = compile_policy("""
policy: sequence-stages
default: ALLOW
rules:
  - id: review
    match: {tool: payments.refund}
    when: {field: params.amount, op: gt, value: 100}
    decision: REQUIRE_APPROVAL
    approval: {group: payments-reviewers, timeout: 10m}
limits:
  - {id: budget, match: {tool: payments.refund}, when: {field: params.amount, op: lte, value: 100},
     key: fleet, window: 1h, sum: params.amount, max: 50}
sequences:
  - {id: after-allowed, after: {match: {tool: payments.refund}}, match: {tool: crm.export},
     within: 1h, decision: REQUIRE_APPROVAL}
  - {id: after-blocked, after: {match: {tool: payments.refund}, decision: BLOCK}, match: {tool: crm.delete},
     within: 1h}
""", "sequence-stages.yaml")


def _pump() -> Pump:
    pump = Pump(POLICY, REVIEWERS)
    pump.now_ms = ms(WALL_T0)
    return pump


def _send(pump: Pump, tool: str, amount: float = 0, seconds: int = 0) -> Decision:
    intent = make_intent("a1", tool=tool, params={"amount": amount}, agent_owner="team-a",
                         occurred_at=EVENT_T0 + timedelta(seconds=seconds))
    return pump.decide(intent.model_dump_json().encode())


def _followers(pump: Pump, seconds: int) -> tuple[DecisionKind, DecisionKind]:
    """The decisions on an export and a delete at ``seconds``."""
    export, delete = _send(pump, "crm.export", seconds=seconds), _send(pump, "crm.delete", seconds=seconds)
    return export.decision, delete.decision


def test_an_action_decided_after_the_shared_hops_is_recorded_for_its_final_decision() -> None:
    allowed = _pump()
    assert _send(allowed, "payments.refund", 20).decision is ALLOW  # forwarded to the fleet budget
    assert _followers(allowed, 60) == (APPROVAL, ALLOW)
    blocked = _pump()
    assert _send(blocked, "payments.refund", 80).decision is BLOCK  # over the fleet budget, at the hop
    assert _followers(blocked, 60) == (ALLOW, BLOCK)


def test_an_approved_action_counts_as_allowed_and_an_expired_one_as_blocked() -> None:
    granted = _pump()
    pending = _send(granted, "payments.refund", 500)
    assert pending.decision is APPROVAL
    assert _followers(granted, 60) == (ALLOW, ALLOW)  # nothing counts while reviewers decide
    granted.verdict(verdict(granted, pending, kind=VerdictKind.APPROVE))
    assert [d.decision for d in finals(granted, pending)] == [ALLOW]
    assert _followers(granted, 120) == (APPROVAL, ALLOW)

    expired = _pump()
    pending = _send(expired, "payments.refund", 500)
    expired.now_ms += 11 * 60_000
    expired.tick()
    assert [d.decision for d in finals(expired, pending)] == [BLOCK]
    assert _followers(expired, 60) == (ALLOW, BLOCK)
