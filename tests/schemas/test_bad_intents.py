"""Each kind of bad intent named by the contract is a BLOCK ``invalid_intent`` that says why."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from schemas import MAX_PARAMS_BYTES, DecisionKind
from streams.engine import InMemoryState, decide_raw, load_policy

POLICY = load_policy(Path(__file__).resolve().parents[2] / "policies" / "examples" / "saas_workflow.yaml")
REQUEST_ID = str(uuid.uuid4())


def _intent(**overrides: Any) -> dict[str, Any]:
    intent: dict[str, Any] = {
        "request_id": REQUEST_ID,
        "agent_id": "agent-1",
        "agent_role": "saas",
        "environment": "production",
        "tool": "contacts.list",
        "action": "read",
        "target": "crm:contacts",
        "params": {},
        "occurred_at": "2026-01-05T10:00:00Z",
    }
    intent.update(overrides)
    return {key: value for key, value in intent.items() if value is not None}


CASES = [
    ("missing field", _intent(agent_id=None), "agent_id"),
    ("wrong type", _intent(params=[1, 2]), "params"),
    ("unknown action", _intent(action="destroy"), "action"),
    ("unknown field", _intent(priority="high"), "priority"),
    ("naive timestamp", _intent(occurred_at="2026-01-05T10:00:00"), "occurred_at"),
    ("target without kind", _intent(target="contacts"), "target"),
    ("params over 64 KiB", _intent(params={"blob": "x" * MAX_PARAMS_BYTES}), "limit is 65536"),
]


@pytest.mark.parametrize(("raw", "mentions"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_intent_is_blocked_with_the_reason(raw: dict[str, Any], mentions: str) -> None:
    decision = decide_raw(POLICY, InMemoryState(), json.dumps(raw))
    assert decision.decision is DecisionKind.BLOCK
    assert decision.reasons[0].startswith("invalid_intent: ")
    assert mentions in decision.reasons[0]
    assert str(decision.request_id) == REQUEST_ID


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_blocked(number: str) -> None:
    raw = json.dumps(_intent(params={"amount": 0})).replace('"amount": 0', f'"amount": {number}')
    decision = decide_raw(POLICY, InMemoryState(), raw)
    assert decision.decision is DecisionKind.BLOCK
    assert "finite" in decision.reasons[0]


def test_params_just_under_the_limit_are_accepted() -> None:
    overhead = len('{"blob":""}')
    raw = json.dumps(_intent(params={"blob": "x" * (MAX_PARAMS_BYTES - overhead)}))
    assert decide_raw(POLICY, InMemoryState(), raw).decision is DecisionKind.ALLOW
