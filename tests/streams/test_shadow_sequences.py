"""A shadow policy's sequence rules count the shadow's own decisions, BLOCKs included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas import AuditRecord, DecisionKind
from streams.engine import compile_policy
from streams.stages.shadow import Shadow
from tests.streams.harness import make_intent

SHADOW = compile_policy("""
policy: contained-shadow
default: ALLOW
rules:
  - {id: no-drop, match: {tool: db.schema.drop}, decision: BLOCK}
sequences:
  - {id: contained, after: {match: {tool: db.schema.drop}, decision: BLOCK},
     match: {tool: "db.rows.*"}, within: 1h}
""", "contained-shadow.yaml")
T0 = datetime(2031, 5, 1, 12, tzinfo=UTC)


def _judge(shadow: Shadow, tool: str, minutes: int) -> DecisionKind:
    at = T0 + timedelta(minutes=minutes)
    intent = make_intent("a1", tool=tool, action="delete", target="database:main", occurred_at=at)
    send = shadow.judge(SHADOW, intent, int(T0.timestamp() * 1000), None)
    record = AuditRecord.model_validate_json(send.value)
    assert record.decision is not None
    return record.decision.decision


def test_a_shadow_block_counts_for_a_sequence_rule_that_counts_blocks() -> None:
    table: dict[str, bytes] = {}
    shadow = Shadow(table)
    assert _judge(shadow, "db.rows.delete", 0) is DecisionKind.ALLOW
    assert _judge(shadow, "db.schema.drop", 1) is DecisionKind.BLOCK
    assert _judge(shadow, "db.rows.delete", 2) is DecisionKind.BLOCK  # contained by the shadow's own BLOCK
    assert _judge(shadow, "db.rows.delete", 62) is DecisionKind.ALLOW
    assert all(key.startswith("s|") for key in table)
