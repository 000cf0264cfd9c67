"""Agent reports reach the audit through a worker (:mod:`sluicegate.reports`): agents need no write
access to the audit topic, so none of them can inject or pre-empt audit records.

The outcomes topic is keyed by agent id and partitioned like the intents, so it joins the decide stage's
inputs: :class:`WithReports` wraps that stage's binding and handles the reports itself. A report is
written to the audit under an event id the worker chooses (request, kind and agent), so an agent can
neither reuse another agent's ids nor a worker's. A report that does not verify with the key of the
agent it names, or that claims what agents may not report, is audited as a security event instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiokafka.structs import ConsumerRecord

from schemas import AuditEventType, AuditRecord, ExecutionOutcome
from sluicegate.reports import Report, parse_report, reporter
from sluicegate.trust import TrustError, agent_names, header, verify
from streams.runtime.bindings import DecideBinding
from streams.runtime.trust import WorkerTrust
from streams.stages.outputs import Send, audit_send

REPORTED = frozenset({AuditEventType.FAIL_OPEN, AuditEventType.SECURITY})
"""What an agent may report besides outcomes: a tool it ran fail-open, replies its SDK refused."""


class WithReports:
    """The decide binding, also reading the outcomes topic (whose records it authenticates and audits)."""

    def __init__(self, inner: DecideBinding, outcomes: str, trust: WorkerTrust) -> None:
        self.inner, self.outcomes, self.trust = inner, outcomes, trust
        self.name, self.store = inner.name, inner.store
        self.sources: tuple[str, ...] = (*inner.sources, outcomes)

    def handle(self, record: ConsumerRecord[Any, Any]) -> list[Send]:
        if record.topic != self.outcomes:
            return self.inner.handle(record)
        report = parse_report(record.value)  # unparseable: the runner parks it on the dead-letter topic
        try:
            agent = self._verify(record, report)
        except TrustError as exc:
            return [_refused(record, report, str(exc))]
        return [_audited(report, agent)]

    def _verify(self, record: ConsumerRecord[Any, Any], report: Report) -> str:
        """The agent whose report this is; TrustError when it may not say it or did not sign it."""
        agent = report.agent_id if isinstance(report, ExecutionOutcome) else _reported_agent(report)
        if record.key != agent.encode():
            raise TrustError(f"a report must be keyed by its agent id {agent!r}")
        if self.trust.ring is None:
            return agent
        names = agent_names(*reporter(record.headers))
        if names[0] != agent:
            raise TrustError(f"the report is about agent {agent!r} but signed as {names[0]!r}")
        if isinstance(report, AuditRecord) and report.intent is not None:
            intent = report.intent
            if agent_names(agent, intent.agent_role, intent.environment, intent.agent_owner) != names:
                raise TrustError("the reported intent's role, environment or owner are not the signer's")
        verify(self.trust.ring, header(record.headers), record.value, "agent", *names)
        return agent

    async def took_over(self, partition: int, abort: Callable[[], bool]) -> list[Send] | None:
        return await self.inner.took_over(partition, abort)

    def gave_up(self, partition: int) -> None:
        self.inner.gave_up(partition)

    def tick(self, partition: int, now_ms: int) -> list[Send]:
        return self.inner.tick(partition, now_ms)

    def flushed(self, partition: int) -> None:
        self.inner.flushed(partition)


def _reported_agent(report: AuditRecord) -> str:
    if report.event_type not in REPORTED:
        raise TrustError("agents report outcomes, fail-open runs and security events, not "
                         f"{report.event_type}")
    if report.intent is None:
        raise TrustError(f"a {report.event_type} report names its intent")
    return report.intent.agent_id


def _event_id(request_id: UUID, kind: str, agent: str) -> str:
    """The audit event id of a report: per request, kind and agent (ids are unique per agent only)."""
    return f"{request_id}:{kind}:{hashlib.blake2b(agent.encode(), digest_size=8).hexdigest()}"


def outcome_record(outcome: ExecutionOutcome) -> AuditRecord:
    """The audit record of an authenticated outcome (a fail-open run's is a ``fail_open`` event)."""
    kind = AuditEventType.FAIL_OPEN if outcome.fail_open else AuditEventType.OUTCOME
    return AuditRecord(event_id=_event_id(outcome.request_id, "outcome", outcome.agent_id), event_type=kind,
                       event_time=outcome.finished_at, request_id=outcome.request_id, outcome=outcome)


def _audited(report: Report, agent: str) -> Send:
    if isinstance(report, ExecutionOutcome):
        record = outcome_record(report)
    else:
        record = report.model_copy(update={
            "event_id": _event_id(report.request_id, f"reported-{report.event_type}", agent)})
    return audit_send(record)


def _refused(record: ConsumerRecord[Any, Any], report: Report, why: str) -> Send:
    """The security event of a report that did not verify (what it claimed stays out of the audit)."""
    source = f"{record.topic}[{record.partition}]@{record.offset}"
    kind = "outcome" if isinstance(report, ExecutionOutcome) else str(report.event_type)
    audit = AuditRecord(
        event_id=f"{report.request_id}:security:report:{source}"[:200], event_type=AuditEventType.SECURITY,
        event_time=datetime.now(UTC), request_id=report.request_id,
        note=f"refused an agent report ({kind}, key {record.key!r}) from {source}: {why}"[:2000])
    return audit_send(audit)
