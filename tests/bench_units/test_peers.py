"""The peers' translation of the engine bench's rules (bench/peers.py): the same verdicts as sluicegate."""

from __future__ import annotations

import pytest

from bench.engine import intents, policy_text
from bench.peers import business_hours, cedar_verdict, rules_only, sluicegate_verdict, timed
from schemas import Intent


def test_rules_only_drops_limits_and_risk() -> None:
    text = rules_only(policy_text(20))
    assert "rules:" in text and "limits:" not in text and "risk:" not in text


def test_business_hours_are_paris_weekdays_nine_to_six() -> None:
    def at(iso: str) -> Intent:
        return Intent.model_validate({
            "request_id": "00000000-0000-0000-0000-000000000001", "agent_id": "a", "agent_role": "r",
            "environment": "dev", "tool": "t.x", "action": "read", "target": "t:x", "occurred_at": iso})
    assert business_hours(at("2025-03-03T08:30:00Z"))  # Monday 09:30 in Paris
    assert not business_hours(at("2025-03-03T17:30:00Z"))  # 18:30 in Paris
    assert not business_hours(at("2025-03-08T10:00:00Z"))  # Saturday


def test_cedar_decides_the_bench_rules_as_sluicegate_does() -> None:
    pytest.importorskip("cedarpy")
    rules = rules_only(policy_text())
    parsed = [Intent.model_validate_json(raw) for raw in intents(1500, 100)]
    _, theirs = timed(cedar_verdict(rules), parsed)
    _, ours = timed(sluicegate_verdict(rules), parsed)
    assert theirs == ours
    assert len(set(ours)) == 3  # the sample exercises ALLOW, REQUIRE_APPROVAL and BLOCK
