"""Approval blocks on rules, limits and risk thresholds; the policy name on every decision."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest

from schemas import DecisionKind
from schemas.policy import Approval
from streams.engine import (
    InMemoryState,
    PolicyError,
    apply,
    compile_policy,
    decide,
    decide_raw,
    evaluate,
    evaluate_intent,
)
from tests.engine.helpers import intent, policy

ALLOW, APPROVAL, BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK

LIMIT_APPROVAL = """rules:
  - {id: refunds, match: {tool: payments.refund}, decision: ALLOW}
limits:
  - id: two-per-minute
    match: {tool: payments.refund}
    window: 1m
    count: 2
    decision: REQUIRE_APPROVAL
    approval: {group: payments-leads, quorum: 2, timeout: 1h, channel: "#refunds"}
"""

THRESHOLD_APPROVAL = """rules:
  - {id: deletes, match: {action: delete}, decision: ALLOW}
risk:
  action_weights: {delete: 0.7}
  thresholds:
    - {at_least: 0.95, decision: BLOCK}
    - at_least: 0.6
      decision: REQUIRE_APPROVAL
      approval: {group: sre, timeout: 5m}
"""


def test_a_limit_names_its_approval() -> None:
    compiled, state = policy(LIMIT_APPROVAL), InMemoryState()
    got = [decide(compiled, state, intent(at=timedelta(seconds=s))) for s in (0, 1, 2)]
    assert [d.decision for d in got] == [ALLOW, ALLOW, APPROVAL]
    assert got[2].rules == ("refunds", "two-per-minute")
    assert compiled.approval_for(got[2].rules) == Approval(
        group="payments-leads", quorum=2, timeout="1h", channel="#refunds",
    )


def test_a_risk_threshold_names_its_approval() -> None:
    compiled = policy(THRESHOLD_APPROVAL)
    decision = evaluate(compiled, InMemoryState(), intent(action="delete")).decision
    assert decision.decision is APPROVAL and decision.rules == ("deletes", "risk>=0.6")
    assert compiled.approval_for(decision.rules) == Approval(group="sre", timeout="5m")


def test_the_first_approval_block_in_policy_order_wins() -> None:
    text = LIMIT_APPROVAL.replace(
        "  - {id: refunds, match: {tool: payments.refund}, decision: ALLOW}",
        "  - {id: refunds, match: {tool: payments.refund}, decision: REQUIRE_APPROVAL}\n"
        "  - {id: refunds-ops, match: {tool: payments.refund}, decision: REQUIRE_APPROVAL,"
        " approval: {group: ops}}",
    )
    compiled = policy(text)
    assert compiled.approval_for(("refunds", "refunds-ops", "two-per-minute")).group == "ops"
    assert compiled.approval_for(("refunds", "two-per-minute")).group == "payments-leads"
    assert compiled.approval_for(("refunds",)) == Approval()  # none given: the defaults
    assert compiled.approval_for(("unknown", "risk>=0.6")) == Approval()


@pytest.mark.parametrize(("text", "line", "message"), [
    (  # approval on a limit that blocks
        "policy: p\nlimits:\n  - id: l\n    window: 1h\n    count: 5\n    approval: {group: g}\n",
        6, "limit l: approval is only allowed with decision REQUIRE_APPROVAL",
    ),
    (  # approval on a BLOCK threshold
        "policy: p\nrisk:\n  thresholds:\n    - at_least: 0.9\n      decision: BLOCK\n"
        "      approval: {group: g}\n",
        6, "risk threshold 0.9: approval is only allowed with decision REQUIRE_APPROVAL",
    ),
    (  # malformed approval on a limit: unknown field
        "policy: p\nlimits:\n  - id: l\n    window: 1h\n    count: 5\n    decision: REQUIRE_APPROVAL\n"
        "    approval:\n      group: g\n      reviewers: 2\n",
        9, "unknown field 'reviewers'",
    ),
    (  # malformed approval on a threshold: quorum below 1
        "policy: p\nrisk:\n  thresholds:\n    - at_least: 0.5\n      decision: REQUIRE_APPROVAL\n"
        "      approval:\n        quorum: 0\n",
        7, "quorum",
    ),
    (  # malformed approval on a limit: bad timeout
        "policy: p\nlimits:\n  - id: l\n    window: 1h\n    count: 5\n    decision: REQUIRE_APPROVAL\n"
        "    approval: {timeout: soon}\n",
        7, "timeout",
    ),
])
def test_a_misplaced_or_malformed_approval_is_rejected(text: str, line: int, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        compile_policy(text, "broken.yaml")
    issues = caught.value.issues
    assert any(issue.line == line and message in issue.message for issue in issues), issues


def test_versions_of_policies_without_the_new_blocks_are_unchanged() -> None:
    """The version is the hash of the document as it was before limits and thresholds had approvals
    and policies had sequence rules."""
    compiled = policy("limits:\n  - {id: l, window: 1m, count: 2, decision: REQUIRE_APPROVAL}\n"
                      "risk:\n  thresholds: [{at_least: 0.6, decision: REQUIRE_APPROVAL}]\n")
    content = compiled.document.model_dump(mode="json", by_alias=True)
    assert content.pop("sequences") == []
    for entry in (*content["limits"], *content["risk"]["thresholds"]):
        assert entry.pop("approval") is None
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    assert compiled.version == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
    with_approval = policy(LIMIT_APPROVAL)
    assert with_approval.version != policy(LIMIT_APPROVAL.replace("quorum: 2", "quorum: 3")).version


def test_every_decision_names_its_policy() -> None:
    compiled, state = policy(LIMIT_APPROVAL, header="policy: refunds-policy\n"), InMemoryState()
    first = evaluate(compiled, state, intent())
    apply(state, first.changes)
    assert first.decision.policy_name == "refunds-policy"
    assert decide_raw(compiled, state, b"{not json").policy_name == "refunds-policy"
    failed = evaluate(compiled, None, intent())  # type: ignore[arg-type]  # engine error: still named
    assert failed.kind is BLOCK and failed.decision.policy_name == "refunds-policy"
    assert decide_raw(None, state, intent().model_dump_json()).policy_name == ""
    assert evaluate_intent(None, state, intent()).decision.policy_name == ""
