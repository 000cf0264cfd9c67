"""A decision is encoded once: its audit record's JSON holds the decision's bytes as sent to the agent,
and is byte for byte what encoding the whole record gives, for every kind of decision."""

from __future__ import annotations

from schemas import AuditRecord, Decision
from streams.engine import compile_policy
from streams.stages.decide import DecideStage
from streams.stages.outputs import Route, Send, audit_send, publish_sends
from tests.streams.harness import make_intent

POLICY = compile_policy("""
policy: encoding
rules:
  - {id: small, match: {tool: payments.refund}, when: {field: params.amount, op: lte, value: 100},
     decision: ALLOW}
  - {id: large, match: {tool: payments.refund}, when: {field: params.amount, op: gt, value: 100},
     decision: REQUIRE_APPROVAL, approval: {group: finance}}
  - {id: huge, match: {tool: payments.refund}, when: {field: params.amount, op: gt, value: 1000},
     decision: BLOCK}
""", "encoding.yaml")


def _sends(amount: float | None, raw: bytes | None = None) -> list[Send]:
    stage = DecideStage({})
    intent = make_intent("agent-1", params={} if amount is None else {"amount": amount, "note": "decision"})
    return stage.handle_intent(raw or intent.model_dump_json().encode(), b"agent-1", POLICY, 0, 1_000).sends


def _check(sends: list[Send]) -> str:
    audits = [send for send in sends if send.route is Route.AUDIT]
    answer = next(send for send in sends if send.route in (Route.DECISIONS, Route.REPLIES))
    assert audits
    for send in audits:
        assert send.record is not None
        assert send.value == send.record.model_dump_json().encode()
        assert AuditRecord.model_validate_json(send.value) == send.record
    decision = audits[0].record.decision if audits[0].record is not None else None
    assert decision is not None and answer.value == decision.model_dump_json().encode()
    return f"{decision.decision}:{decision.final}"


def test_allow_block_and_pending_approval_records_encode_as_a_whole() -> None:
    kinds = {_check(_sends(amount)) for amount in (10, 500, 5_000, None)}
    assert {"ALLOW:True", "REQUIRE_APPROVAL:False", "BLOCK:True"} <= kinds


def test_a_decision_without_an_intent_encodes_as_a_whole() -> None:
    _check(_sends(None, b'{"request_id": "0b5a4b7e-6d9c-4b61-9f43-2d1f1a3e2c11", "agent_id": 7}'))


def test_a_record_with_more_than_its_decision_is_encoded_whole() -> None:
    decision = Decision.model_validate_json(_sends(10)[0].value)
    sends = publish_sends(make_intent("agent-1"), decision)
    record = sends[1].record
    assert record is not None
    noted = record.model_copy(update={"note": "a note after the decision"})
    assert audit_send(noted, sends[0].value).value == noted.model_dump_json().encode()
