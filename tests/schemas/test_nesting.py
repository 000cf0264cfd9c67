"""Deeply nested params are refused with a clear ``invalid_intent`` reason, never a recursion error, by
the worker's entry point and by the SDK before it sends anything."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas import DecisionKind
from schemas.common import MAX_JSON_DEPTH
from sluicegate import Gate, InvalidIntent
from sluicegate.settings import Settings
from streams.engine import InMemoryState, decide_raw
from tests.schemas.test_bad_intents import POLICY, REQUEST_ID, _intent


def nested(levels: int) -> Any:
    """A JSON value of ``levels`` containers, alternating objects and arrays."""
    value: Any = 1
    for level in range(levels):
        value = {"a": value} if level % 2 else [value]
    return value


def raw_nested(levels: int) -> str:
    """An intent whose params (one container) hold ``levels - 1`` more, written out as text."""
    inner = "[" * (levels - 1) + "1" + "]" * (levels - 1)
    return json.dumps(_intent(params={"p": 0})).replace('{"p": 0}', '{"p": ' + inner + "}")


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 150, 300, 5000])
def test_the_worker_refuses_deep_params_naming_the_limit_and_the_request(levels: int) -> None:
    decision = decide_raw(POLICY, InMemoryState(), raw_nested(levels))
    assert decision.decision is DecisionKind.BLOCK
    reason = decision.reasons[0]
    assert reason.startswith("invalid_intent: ")
    assert "params nests deeper than" in reason and f"the limit is {MAX_JSON_DEPTH}" in reason
    assert len(reason) < 400
    if levels < 900:  # the request is named as long as the interpreter's own parser can read the fields
        assert str(decision.request_id) == REQUEST_ID


def test_params_at_the_limit_are_decided() -> None:
    decision = decide_raw(POLICY, InMemoryState(), raw_nested(MAX_JSON_DEPTH))
    assert not decision.reasons[0].startswith("invalid_intent")


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 300, 100_000])
def test_the_sdk_refuses_deep_params_locally(levels: int) -> None:
    gate = Gate(Settings(trust_off=True), agent_id="agent-1", agent_role="saas", environment="production")
    with pytest.raises(InvalidIntent) as raised:
        gate.intent(tool="t", action="read", target="crm:contacts", params={"p": nested(levels - 1)})
    message = str(raised.value)
    assert f"params nests deeper than {MAX_JSON_DEPTH} levels" in message
    assert len(message) < 1000
    gate.intent(tool="t", action="read", target="crm:contacts", params={"p": nested(MAX_JSON_DEPTH - 1)})


def test_a_nested_non_finite_number_is_still_refused() -> None:
    gate = Gate(Settings(trust_off=True), agent_id="agent-1", agent_role="saas", environment="production")
    with pytest.raises(InvalidIntent, match="finite"):
        gate.intent(tool="t", action="read", target="crm:contacts", params={"p": [{"x": float("nan")}]})
