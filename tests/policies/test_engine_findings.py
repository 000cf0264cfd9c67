"""Engine behaviour found wrong while writing the example policies: minimal failing tests.

Each test states the scenario rule it checks; they belong to the engine (streams/engine/), not the policies.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from schemas.common import DecisionKind
from schemas.intent import Intent
from streams.engine import InMemoryState, compile_policy, decide

T0 = datetime(2026, 1, 5, 10, tzinfo=UTC)

BUDGET = """\
policy: budget
rules:
  - {id: refunds, match: {tool: payments.refund}, decision: ALLOW}
limits:
  - {id: budget, match: {tool: payments.refund}, key: fleet, window: 1d, sum: params.amount, max: 5000,
     decision: REQUIRE_APPROVAL}
"""

RATE = """\
policy: rate
rules:
  - {id: payments, match: {tool: payments.create}, decision: ALLOW}
limits:
  - {id: per-hour, match: {tool: payments.create}, key: agent, window: 1h, count: 50, decision: BLOCK}
"""


def _intent(tool: str, amount: float, at: datetime) -> Intent:
    return Intent(
        request_id=uuid.uuid4(), agent_id="agent-1", agent_role="support", environment="production",
        tool=tool, action="create", target="payments:refunds", params={"amount": amount}, occurred_at=at,
    )


def test_a_sum_limit_reaching_its_max_exactly_in_decimal_money_is_not_exceeded() -> None:
    """"may not exceed 5,000": refunds of 4999.5 + 0.1 + 0.1 + 0.3 sum to exactly 5,000.

    The engine adds binary floats (4999.5 + 0.1 + 0.1 = 4999.700000000001) and so asks for approval of
    the last 0.3, reporting "4999.7 + 0.3 ... exceeds 5000".
    """
    policy = compile_policy(BUDGET, "budget.yaml")
    state = InMemoryState()
    decisions = [
        decide(policy, state, _intent("payments.refund", amount, T0 + timedelta(minutes=i))).decision
        for i, amount in enumerate([4999.5, 0.1, 0.1, 0.3])
    ]
    assert decisions == [DecisionKind.ALLOW] * 4


def test_a_late_intent_cannot_make_51_in_one_hour() -> None:
    """"the N+1-th counted action inside ANY window of the given length gets the limit's decision".

    50 payments at 10:00 ... 10:49 are allowed; a payment stamped 09:59:59 (arriving late, as Kafka
    allows across producers' clocks) is also allowed, because the engine only looks at (t - 1h, t]:
    the window [09:59:59, 10:49:00] then holds 51 counted payments.
    """
    policy = compile_policy(RATE, "rate.yaml")
    state = InMemoryState()
    for minute in range(50):
        decision = decide(policy, state, _intent("payments.create", 10, T0 + timedelta(minutes=minute)))
        assert decision.decision is DecisionKind.ALLOW
    late = decide(policy, state, _intent("payments.create", 10, T0 - timedelta(seconds=1)))
    assert late.decision is DecisionKind.BLOCK, late.reasons
