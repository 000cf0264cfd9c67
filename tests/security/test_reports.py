"""Agent reports through a worker (pure: the binding on hand-made records): authenticated ones are
audited under the worker's event id, anything else becomes a security event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord

from schemas import AuditEventType, AuditRecord, Decision, DecisionKind, ExecutionOutcome, OutcomeStatus
from sluicegate.reports import report_headers
from sluicegate.trust import AgentCredential, KeyRing, RequestSigner
from streams.runtime.outcomes import WithReports
from streams.runtime.trust import WorkerTrust
from streams.stages.outputs import Route
from tests.streams.harness import make_intent

RING = KeyRing.generate()
AGENT = AgentCredential.issue(RING, "fin-1", "support", "production", "team-a")
OUTCOMES = "p.outcomes"


class Inner:
    """The decide binding's shape (its own records are not under test)."""

    name, store, sources = "decide", None, ("p.intents", "p.internal.agent-feedback")


def binding(trust_on: bool = True) -> WithReports:
    trust = WorkerTrust(RING, RequestSigner.generate(), 3) if trust_on else WorkerTrust(None, None, 3)
    return WithReports(Inner(), OUTCOMES, trust)  # type: ignore[arg-type]


def record(value: bytes, headers: list[tuple[str, bytes]], key: bytes = b"fin-1") -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(OUTCOMES, 1, 7, 0, 0, key, value, None, len(key), len(value), tuple(headers))


def outcome(agent: str = "fin-1", fail_open: bool = False) -> bytes:
    return ExecutionOutcome(request_id=uuid.uuid4(), agent_id=agent, tool="payments.refund",
                            status=OutcomeStatus.SUCCESS, duration_ms=3.0, finished_at=datetime.now(UTC),
                            fail_open=fail_open).model_dump_json().encode()


def audited(reports: WithReports, rec: ConsumerRecord[Any, Any]) -> AuditRecord:
    (send,) = reports.handle(rec)
    assert send.route is Route.AUDIT
    return AuditRecord.model_validate_json(send.value)


def test_an_authenticated_outcome_is_audited_under_the_workers_event_id() -> None:
    value = outcome(fail_open=True)
    audit = audited(binding(), record(value, report_headers(AGENT, value)))
    assert audit.event_type is AuditEventType.FAIL_OPEN and audit.outcome is not None
    assert audit.event_id.startswith(f"{audit.request_id}:outcome:")
    assert binding().sources == ("p.intents", "p.internal.agent-feedback", OUTCOMES)


def test_a_fail_open_report_keeps_its_content_under_the_workers_event_id() -> None:
    intent = make_intent("fin-1", agent_owner="team-a")
    decision = Decision(request_id=intent.request_id, agent_id="fin-1", decision=DecisionKind.BLOCK,
                        reasons=("governance_unavailable: down",), decided_at=datetime.now(UTC))
    report = AuditRecord(event_id="decision:forged-id", event_type=AuditEventType.FAIL_OPEN,
                         event_time=datetime.now(UTC), request_id=intent.request_id, intent=intent,
                         decision=decision)
    value = report.model_dump_json().encode()
    audit = audited(binding(), record(value, report_headers(AGENT, value)))
    assert audit.event_type is AuditEventType.FAIL_OPEN and audit.decision == decision
    assert audit.event_id.startswith(f"{intent.request_id}:reported-fail_open:")


@pytest.mark.parametrize(("why", "make"), [
    ("no sg-agent header", lambda v: record(v, [])),
    ("no authenticator", lambda v: record(v, report_headers(AGENT, v)[1:])),
    ("unknown key id", lambda v: record(v, report_headers(
        AgentCredential.issue(KeyRing.generate(), "fin-1", "support", "production", "team-a"), v))),
    ("wrong authenticator", lambda v: record(v.replace(b"3.0", b"4.0"), report_headers(AGENT, v))),
    ("signed as 'fin-2'", lambda v: record(v, report_headers(
        AgentCredential.issue(RING, "fin-2", "support", "production", "team-a"), v))),
    ("keyed by its agent id", lambda v: record(v, report_headers(AGENT, v), key=b"fin-2")),
])
def test_a_report_that_does_not_verify_is_a_security_event(why: str, make: Any) -> None:
    audit = audited(binding(), make(outcome()))
    assert audit.event_type is AuditEventType.SECURITY and audit.outcome is None
    assert audit.note is not None and why in audit.note


def test_agents_cannot_report_decisions() -> None:
    intent = make_intent("fin-1", agent_owner="team-a")
    forged = AuditRecord(event_id="x", event_type=AuditEventType.DECISION, event_time=datetime.now(UTC),
                         request_id=intent.request_id, intent=intent).model_dump_json().encode()
    audit = audited(binding(), record(forged, report_headers(AGENT, forged)))
    assert audit.event_type is AuditEventType.SECURITY and "not decision" in (audit.note or "")


def test_with_trust_off_only_the_key_is_checked() -> None:
    assert audited(binding(trust_on=False), record(outcome(), [])).event_type is AuditEventType.OUTCOME


def test_an_unparseable_report_raises_for_the_dead_letter_topic() -> None:
    with pytest.raises(ValueError):
        binding().handle(record(b"not json", []))
