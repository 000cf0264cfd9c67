"""The Evaluation result: the combining rule with the default, the lazily built Decision."""

from __future__ import annotations

from datetime import timedelta

import pytest

from schemas import Decision, DecisionKind
from streams.engine import Evaluation, InMemoryState, apply, evaluate
from streams.engine.evaluate import LimitOutcome, combine
from tests.engine.helpers import intent, policy

ALLOW, APPROVAL, BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK

# No rule matches payments.refund; a limit asks for approval from the second refund in a minute.
LIMITED = """limits:
  - id: one-per-minute
    match: {tool: payments.refund}
    window: 1m
    count: 1
    decision: REQUIRE_APPROVAL
"""


@pytest.mark.parametrize(("default", "expected"), [("BLOCK", BLOCK), ("ALLOW", APPROVAL)])
def test_a_limit_only_makes_the_default_more_restrictive(default: str, expected: DecisionKind) -> None:
    compiled, state = policy(f"default: {default}\n" + LIMITED), InMemoryState()
    first = evaluate(compiled, state, intent())
    apply(state, first.changes)
    second = evaluate(compiled, state, intent(at=timedelta(seconds=10)))
    assert second.kind is expected and second.decision.decision is expected
    assert second.default_used
    assert second.decision.rules == ("one-per-minute",)
    assert second.decision.reasons[0] == f"default: no rule applied ({default})"


def test_the_decision_is_built_once_and_matches_the_verdict() -> None:
    compiled = policy("rules:\n  - {id: r, match: {tool: payments.refund}, decision: REQUIRE_APPROVAL}\n")
    result = evaluate(compiled, InMemoryState(), intent())
    assert result.kind is APPROVAL
    decision = result.decision
    assert isinstance(decision, Decision) and decision is result.decision
    assert decision.decision is APPROVAL
    assert decision.rules == ("r",) and decision.reasons == ("r: REQUIRE_APPROVAL",)
    assert decision.policy_version == compiled.version
    assert Decision.model_validate_json(decision.model_dump_json()) == decision


def test_an_evaluation_can_be_made_from_a_decision() -> None:
    compiled = policy("rules:\n  - {id: r, decision: ALLOW}\n")
    decision = evaluate(compiled, InMemoryState(), intent()).decision
    rebuilt = Evaluation(decision, ())
    assert rebuilt.decision is decision and rebuilt.kind is ALLOW and rebuilt.applied == ()


def test_combine_keeps_an_engine_error() -> None:
    compiled = policy("default: ALLOW\n" + LIMITED)
    item = intent()
    failed = evaluate(compiled, None, item)  # type: ignore[arg-type]  # no state: the engine fails closed
    assert failed.kind is BLOCK and failed.decision.reasons[0].startswith("engine_error")
    merged = combine(compiled, failed, LimitOutcome((), ()), item)
    assert merged.decision is failed.decision
