"""Conditions and matching, table-driven: every op on both sides of its boundary, and its errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from schemas import DecisionKind
from streams.engine import InMemoryState, evaluate
from tests.engine.helpers import intent, policy

ALLOW, BLOCK = DecisionKind.ALLOW, DecisionKind.BLOCK


X_BETWEEN = "{all: [{field: params.x, op: gt, value: 1}, {field: params.x, op: lt, value: 3}]}"
X_EITHER = "{any: [{field: params.x, op: eq, value: 1}, {field: params.x, op: eq, value: 3}]}"
AMOUNT_LTE_50 = "{field: params.amount, op: lte, value: 50}"


def _decide(when: str, params: dict[str, Any] | None = None, **fields: Any) -> DecisionKind:
    compiled = policy(f"rules:\n  - id: r\n    when: {when}\n    decision: ALLOW\n")
    return evaluate(compiled, InMemoryState(), intent(params=params or {}, **fields)).decision.decision


@pytest.mark.parametrize(
    ("when", "params", "expected"),
    [
        ("{field: params.amount, op: lte, value: 50}", {"amount": 50}, ALLOW),
        ("{field: params.amount, op: lte, value: 50}", {"amount": 50.01}, BLOCK),
        ("{field: params.amount, op: lt, value: 1000}", {"amount": 999.99}, ALLOW),
        ("{field: params.amount, op: lt, value: 1000}", {"amount": 1000}, BLOCK),
        ("{field: params.amount, op: gt, value: 25000}", {"amount": 25000}, BLOCK),
        ("{field: params.amount, op: gt, value: 25000}", {"amount": 25000.5}, ALLOW),
        ("{field: params.amount, op: gte, value: 100}", {"amount": 100}, ALLOW),
        ("{field: params.amount, op: gte, value: 100}", {"amount": 99}, BLOCK),
        ("{field: params.kind, op: eq, value: internal}", {"kind": "internal"}, ALLOW),
        ("{field: params.kind, op: eq, value: internal}", {"kind": "external"}, BLOCK),
        ("{field: params.kind, op: ne, value: internal}", {"kind": "external"}, ALLOW),
        ("{field: params.flag, op: eq, value: 1}", {"flag": True}, BLOCK),  # bool is not a number
        ("{field: params.flag, op: eq, value: true}", {"flag": True}, ALLOW),
        ("{field: params.n, op: eq, value: 1}", {"n": 1.0}, ALLOW),
        ("{field: params.t, op: in, value: [t3.nano, t3.micro]}", {"t": "t3.micro"}, ALLOW),
        ("{field: params.t, op: in, value: [t3.nano, t3.micro]}", {"t": "m5.large"}, BLOCK),
        ("{field: params.t, op: not_in, value: [t3.nano]}", {"t": "m5.large"}, ALLOW),
        ("{field: params.t, op: glob, value: 't3.*'}", {"t": "t3.small"}, ALLOW),
        ("{field: params.t, op: glob, value: 't3.*'}", {"t": "xt3.small"}, BLOCK),
        ("{field: params.s, op: regex, value: '^DEL'}", {"s": "DELETE"}, ALLOW),
        ("{field: params.s, op: regex, value: 'ETE$'}", {"s": "DELETE x"}, BLOCK),
        ("{field: params.s, op: exists, value: true}", {"s": 1}, ALLOW),
        ("{field: params.s, op: exists, value: true}", {}, BLOCK),
        ("{field: params.s, op: exists, value: false}", {}, ALLOW),
        ("{field: params.record_count, op: lt, value: 100, default: 1}", {}, ALLOW),
        ("{field: params.a.b, op: eq, value: 2}", {"a": {"b": 2}}, ALLOW),
        (X_BETWEEN, {"x": 2}, ALLOW),
        (X_BETWEEN, {"x": 3}, BLOCK),
        (X_EITHER, {"x": 3}, ALLOW),
        ("{not: {field: params.x, op: eq, value: 1}}", {"x": 2}, ALLOW),
        ("{field: environment, op: in, value: [dev, staging]}", {}, BLOCK),
        ("{field: action, op: eq, value: create}", {}, ALLOW),
    ],
)
def test_comparison(when: str, params: dict[str, Any], expected: DecisionKind) -> None:
    assert _decide(when, params) is expected


def test_labels_are_fields() -> None:
    assert _decide("{field: labels.team, op: eq, value: a}", labels={"team": "a"}) is ALLOW
    assert _decide("{field: labels.team, op: eq, value: a}", labels={"team": "b"}) is BLOCK


@pytest.mark.parametrize(
    ("when", "params", "error"),
    [
        ("{field: params.amount, op: lte, value: 50}", {}, "params.amount is missing"),
        (AMOUNT_LTE_50, {"amount": "10"}, "params.amount is str, not a number"),
        ("{field: params.amount, op: lte, value: 50}", {"amount": True}, "not a number"),
        ("{field: params.amount, op: lte, value: 50}", {"amount": None}, "null, not a number"),
        ("{field: params.t, op: glob, value: 'a*'}", {"t": 3}, "params.t is int, not a string"),
        ("{not: {field: params.amount, op: gt, value: 1}}", {}, "params.amount is missing"),
    ],
)
def test_condition_error_blocks_and_names_the_rule(when: str, params: dict[str, Any], error: str) -> None:
    compiled = policy(f"default: ALLOW\nrules:\n  - id: r\n    when: {when}\n    decision: ALLOW\n")
    decision = evaluate(compiled, InMemoryState(), intent(params=params)).decision
    assert decision.decision is BLOCK
    assert decision.rules == ("r",)
    assert decision.reasons[0].startswith("r: evaluation error: ") and error in decision.reasons[0]


SCHEDULE = """schedules:
  bh: {timezone: Europe/Paris, days: [mon, tue, wed, thu, fri], start: "09:00", end: "18:00"}
rules:
  - id: r
    when: {schedule: bh}
    decision: ALLOW
"""


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (datetime(2025, 3, 3, 8, 0, tzinfo=UTC), ALLOW),  # Monday 09:00 Paris (UTC+1): start inclusive
        (datetime(2025, 3, 3, 7, 59, tzinfo=UTC), BLOCK),
        (datetime(2025, 3, 3, 16, 59, tzinfo=UTC), ALLOW),
        (datetime(2025, 3, 3, 17, 0, tzinfo=UTC), BLOCK),  # 18:00 Paris: end exclusive
        (datetime(2025, 7, 7, 7, 0, tzinfo=UTC), ALLOW),  # summer time, UTC+2
        (datetime(2025, 3, 8, 10, 0, tzinfo=UTC), BLOCK),  # Saturday
    ],
)
def test_schedule_in_named_zone(at: datetime, expected: DecisionKind) -> None:
    decision = evaluate(policy(SCHEDULE), InMemoryState(), intent(at=at)).decision
    assert decision.decision is expected


MATCHING = """default: ALLOW
rules:
  - id: r
    match:
      tool: ["iam.*", payments.refund]
      action: [create, delete]
      target: "payments:*"
      environment: [production]
      agent_role: support
      agent_id: [agent-1, agent-2]
    decision: BLOCK
"""


@pytest.mark.parametrize(
    ("fields", "matched"),
    [
        ({}, True),
        ({"tool": "iam.create_user"}, True),
        ({"tool": "iam"}, False),
        ({"tool": "payments.refunds"}, False),
        ({"action": "read"}, False),
        ({"target": "crm:payments"}, False),
        ({"environment": "staging"}, False),
        ({"agent_role": "devops"}, False),
        ({"agent_id": "agent-3"}, False),
    ],
)
def test_match_keys(fields: dict[str, Any], matched: bool) -> None:
    decision = evaluate(policy(MATCHING), InMemoryState(), intent(**fields)).decision
    assert (decision.rules == ("r",)) is matched
    assert decision.decision is (BLOCK if matched else ALLOW)


def test_index_returns_only_candidate_rules() -> None:
    rules = "".join(f"  - id: r{i}\n    match: {{tool: tool.{i}}}\n    decision: ALLOW\n" for i in range(50))
    glob = "  - id: any-glob\n    match: {tool: 'tool.*'}\n    decision: BLOCK\n"
    compiled = policy("rules:\n" + rules + glob)
    from schemas import Action

    found = compiled.rules_for("tool.7", Action.READ)
    assert [rule.id for rule in found] == ["r7", "any-glob"]
    assert compiled.rules_for("other", Action.READ) == ()
