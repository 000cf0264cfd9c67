"""Properties of the engine, checked with hypothesis."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import Decision, DecisionKind, Intent
from streams.engine import InMemoryState, compile_policy, decide, decide_raw, evaluate

POLICY = """policy: props
default: ALLOW
schedules:
  night: {timezone: America/New_York, start: "00:00", end: "06:00"}
rules:
  - id: small
    match: {tool: "payments.*"}
    when: {field: params.amount, op: lte, value: 50}
    decision: ALLOW
  - id: mid
    match: {tool: "payments.*"}
    when: {all: [{field: params.amount, op: gt, value: 50}, {field: params.amount, op: lte, value: 500}]}
    decision: REQUIRE_APPROVAL
  - id: bulk
    when: {field: params.record_count, op: gte, value: 100, default: 1}
    decision: REQUIRE_APPROVAL
  - id: nights
    match: {action: delete}
    when: {schedule: night}
    decision: BLOCK
  - id: regions
    when: {any: [{field: labels.region, op: regex, value: "^eu-"}, {field: target, op: glob, value: "db:*"}]}
    decision: ALLOW
limits:
  - {id: per-agent, window: 1m, count: 3}
  - {id: budget, key: fleet, window: 1h, sum: params.amount, max: 200, match: {tool: "payments.*"},
     decision: REQUIRE_APPROVAL}
  - {id: per-target, key: [target, role], window: 10s, count: 5}
risk:
  action_weights: {delete: 0.3, create: 0.1}
  target_sensitivity: [{target: "db:*", weight: 0.2}]
  magnitude: [{field: params.amount, scale: 100, weight: 0.2}]
  history:
    min_observations: 3
    amount: {z: 2, weight: 0.5}
    new_target: {weight: 0.3}
    unusual_hour: {weight: 0.2}
    burst: {window: 10s, ratio: 2, weight: 0.4}
  thresholds: [{at_least: 0.9, decision: BLOCK}, {at_least: 0.6, decision: REQUIRE_APPROVAL}]
"""
BLOCK_RULE = """  - id: extra-block
    match: {{tool: "{tool}"}}
    when: {{field: params.amount, op: gte, value: {amount}}}
    decision: BLOCK
"""
BASE = compile_policy(POLICY, "props.yaml")
T0 = datetime(2025, 1, 1, tzinfo=UTC)

numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 50, 50.0, 500, 500.0001, 1e308, -1e308, 5e-324, 2**63, True, None, "50"]),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3),
    ),
    max_leaves=8,
)
intent_dicts = st.fixed_dictionaries(
    {
        "request_id": st.uuids().map(str),
        "agent_id": st.sampled_from(["a", "b", "c"]),
        "agent_role": st.sampled_from(["support", "ops"]),
        "environment": st.sampled_from(["production", "dev"]),
        "tool": st.sampled_from(["payments.refund", "payments.create", "db.query", "crm.get"]),
        "action": st.sampled_from(["read", "create", "update", "delete", "execute"]),
        "target": st.sampled_from(["db:users", "payments:refunds", "crm:accounts", "db:audit"]),
        "params": st.fixed_dictionaries({}, optional={
            "amount": numbers, "record_count": numbers, "nested": json_values,
        }),
        "occurred_at": st.integers(min_value=0, max_value=3_600_000).map(
            lambda ms: (T0 + timedelta(milliseconds=ms)).isoformat()),
        "labels": st.dictionaries(
            st.sampled_from(["region", "team"]), st.sampled_from(["eu-1", "us-1"]), max_size=2,
        ),
    }
)


def _mutate(data: dict[str, Any], drop: str | None, junk: Any) -> str:
    broken = dict(data)
    if drop is not None:
        broken.pop(drop, None)
        broken[drop + "_x"] = junk
    return json.dumps(broken, allow_nan=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200),
        json_values.map(lambda value: json.dumps(value, allow_nan=True)),
        st.builds(
            _mutate, intent_dicts, st.one_of(st.none(), st.sampled_from(["tool", "occurred_at", "action"])),
            json_values,
        ),
        intent_dicts.map(lambda data: json.dumps(data, allow_nan=True)),
    )
)
def test_decide_raw_never_raises(raw: str | bytes) -> None:
    decision = decide_raw(BASE, InMemoryState(), raw)
    assert isinstance(decision, Decision)
    Decision.model_validate_json(decision.model_dump_json())  # the wire form is always valid
    if decision.reasons and decision.reasons[0].startswith("invalid_intent: "):
        assert decision.decision is DecisionKind.BLOCK


def _valid(items: list[dict[str, Any]]) -> list[Intent]:
    out = []
    for data in items:
        try:
            out.append(Intent.model_validate_json(json.dumps(data, allow_nan=True)))
        except ValueError:
            continue
    return sorted(out, key=lambda intent: intent.occurred_at)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(intent_dicts, min_size=1, max_size=25),
    st.sampled_from(["payments.*", "*", "db.query", "crm.get"]),
    st.sampled_from([0, 20, 60, 1e9]),
)
def test_adding_a_block_rule_is_never_less_restrictive(
    items: list[dict[str, Any]], tool: str, amount: float,
) -> None:
    extra = BLOCK_RULE.format(tool=tool, amount=amount)
    stricter = compile_policy(POLICY.replace("limits:", extra + "limits:"), "stricter.yaml")
    state = InMemoryState()
    for intent in _valid(items):
        # Both judge the same state (a stricter policy lets fewer actions consume budget, so separate
        # streams could diverge legitimately); then the stream advances under the base policy.
        base = evaluate(BASE, state, intent).decision.decision
        strict = evaluate(stricter, state, intent).decision.decision
        assert strict.severity >= base.severity
        decide(BASE, state, intent)


@settings(max_examples=60, deadline=None)
@given(st.lists(intent_dicts, min_size=1, max_size=30))
def test_replaying_a_stream_gives_identical_decisions(items: list[dict[str, Any]]) -> None:
    raws = [json.dumps(data, allow_nan=True) for data in items]
    raws += ["{not json", json.dumps({"request_id": str(uuid.uuid4())})]
    runs = []
    for _ in range(2):
        state = InMemoryState()
        runs.append([decide_raw(BASE, state, raw).model_dump_json() for raw in raws])
    assert runs[0] == runs[1]
