"""``determining`` through the deciding stages (no Kafka): as the engine makes it, on every path the
worker takes, including approvals and the shared-limit hops; the same as a replay of the intents."""

from __future__ import annotations

import uuid

from schemas import Decision, DecisionKind, Intent, VerdictKind
from streams.engine import InMemoryState, decide_raw
from streams.stages.outputs import Route
from tests.streams.test_approval_stage import finals, pump, raw, verdict
from tests.streams.test_stages import POLICY, Pump, refund

ALLOW, APPROVAL, BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK


def test_the_stages_name_what_determined_each_decision_as_a_replay_does() -> None:
    """Rules, the agent limit (decided on the agent's partition) and the shared limits (decided by the
    last hop) determine as they do when ``sluicegate evaluate`` replays the same intents."""
    p, replay = Pump(), InMemoryState()
    bodies = [refund(amount=60), refund(agent="a2", amount=60, seconds=1), refund(seconds=2),
              refund(seconds=3), refund(agent="a3", amount=10, seconds=4),
              refund(agent="a4", amount=5, seconds=5)]
    got = [p.decide(body, key=Intent.model_validate_json(body).agent_id.encode()) for body in bodies]
    expected = [decide_raw(POLICY, replay, body) for body in bodies]
    assert [(d.decision, d.rules, d.determining) for d in got] == \
        [(d.decision, d.rules, d.determining) for d in expected]
    assert [d.determining for d in got] == [
        ("refunds",),  # ALLOW, after both shared hops
        ("budget",),  # 120 > 100 on the fleet budget: REQUIRE_APPROVAL, pending
        ("refunds",),
        ("per-agent",),  # the third refund of a1: BLOCKed on its own partition, no hop
        ("refunds",),
        ("per-tool",),  # the fourth counted refund in the hour
    ]
    assert Route.SHARED in p.routes


def test_invalid_input_and_a_missing_policy_are_named() -> None:
    p = Pump()
    rid = uuid.uuid4()
    invalid = p.agent.handle_intent(f'{{"request_id": "{rid}"}}'.encode(), b"k", POLICY, 0, 0).decision
    assert invalid is not None and (invalid.agent_id, invalid.determining) == ("k", ("invalid_intent",))
    assert invalid.policy_name == "stages"
    none = p.agent.handle_intent(refund(), b"a1", None, 0, 0).decision
    assert none is not None and none.determining == ("no_policy",)
    p.agent.max_event_skew_ms = 1000
    skewed = p.agent.handle_intent(refund(), b"a1", POLICY, 0, 0, appended_ms=0).decision  # 2030 vs 1970
    assert skewed is not None and skewed.determining == ("event_time_skew",)


def test_a_hop_without_the_policy_blocks_as_policy_unavailable() -> None:
    p = Pump()
    outcome = p.agent.handle_intent(refund(), b"a1", POLICY, 0, 0)
    forward = [s for s in outcome.sends if s.route is Route.SHARED]
    p.policy = None  # type: ignore[assignment]  # the hops no longer know the version
    p.run(forward)
    [decision] = p.decisions
    assert (decision.decision, decision.determining) == (BLOCK, ("policy_unavailable",))
    assert decision.rules == ("refunds",)


def _final(kind: VerdictKind | None) -> tuple[Decision, Decision]:
    p = pump()
    pending = p.decide(raw(amount=500))
    if kind is None:
        p.now_ms += 3_600_000
        p.tick()
    else:
        p.verdict(verdict(p, pending, "alice", kind))
    [final] = finals(p, pending)
    return pending, final


def test_an_approvals_final_names_how_it_ended_then_the_rule_that_required_it() -> None:
    for kind, expected in [(VerdictKind.APPROVE, (ALLOW, "approval_granted")),
                           (VerdictKind.DENY, (BLOCK, "approval_denied")),
                           (None, (BLOCK, "approval_expired"))]:
        pending, final = _final(kind)
        assert (pending.decision, pending.final, pending.determining) == (APPROVAL, False, ("review",))
        assert (final.decision, final.determining) == (expected[0], (expected[1], "review"))
        assert final.rules == pending.rules == ("review",)
