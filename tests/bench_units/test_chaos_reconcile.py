"""The chaos run's conflicts, by cause: two finals on the topic, a final the SDK missed, a late final."""

from __future__ import annotations

from collections import Counter

from bench.chaos_reconcile import Call, Windows, reconcile


def _call(rid: str, verdict: str = "BLOCK", unavailable: bool = True) -> Call:
    """A call that began at 100 s and was answered 30 s later."""
    return Call(request_id=rid, agent_id="a", tool="crm.get_account", amount=0.0, occurred_ms=0,
                started=100.0, verdict=verdict, unavailable=unavailable, answers=1, latency_ms=30_000.0)


def test_conflicts_are_split_by_when_their_final_reached_the_topic() -> None:
    calls = [_call("late"), _call("missed"), _call("unseen"), _call("two", "ALLOW", False),
             _call("agreed", "ALLOW", False)]
    topic = {"late": ["ALLOW"], "missed": ["ALLOW"], "unseen": ["ALLOW"], "two": ["ALLOW", "BLOCK"],
             "agreed": ["ALLOW"]}
    seen = {"late": 130.5, "missed": 101.0, "two": 101.0, "agreed": 101.0}
    audit = {rid: Counter({finals[0]: 1}) for rid, finals in topic.items()}

    result = reconcile(calls, topic, audit, [], Windows(), Windows(), seen)

    assert result["conflicting"] == 4
    assert result["conflict_causes"] == {"final_after_answer": 1, "final_before_answer": 1,
                                         "final_not_seen": 1, "on_topic": 1}
