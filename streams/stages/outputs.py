"""What the stages send: routes, messages to produce, and the decision and audit records every stage
builds the same way."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from schemas.approval import ApprovalRequest
from schemas.audit import AuditEventType, AuditRecord
from schemas.common import DecisionKind
from schemas.decision import UNAUTHENTICATED, WAIT_EXPIRED, WRONG_PARTITION, Decision
from schemas.intent import Intent
from schemas.policy import Approval, duration_ms
from schemas.topics import dead_letter_headers
from sluicegate.trust import agent_names
from streams.engine import CompiledPolicy
from streams.engine.evaluate import blocked
from streams.messages import (
    Count,
    Forward,
    Open,
    Pending,
)
from streams.stages.approval_machine import new_request

MAX_DEAD_LETTER_BYTES = 256 * 1024
_APPROVAL = DecisionKind.REQUIRE_APPROVAL
_REFUSED = frozenset({UNAUTHENTICATED, WRONG_PARTITION})
"""Refusals of an intent whose sender is not known to be its agent: its reply key is not honoured."""
_DECISION = {"decision"}
_AFTER_DECISION = (b',"approval_request":null,"verdict":null,"outcome":null,"note":null,"checkpoint":null,'
                   b'"chain":null}')
"""How an audit record's JSON ends after its decision when nothing else is set (its field order)."""


class Route(StrEnum):
    """Where an output goes."""

    DECISIONS = "decisions"
    REPLIES = "replies"
    AUDIT = "audit"
    SHARED = "shared"
    FEEDBACK = "feedback"
    DEAD_LETTER = "dead_letter"
    APPROVAL_REQUESTS = "approval_requests"
    APPROVAL_CONTROL = "approval_control"
    APPROVAL_RESULTS = "approval_results"


@dataclass(frozen=True, slots=True)
class Send:
    """One message to produce. ``agent`` names the agent a decision is for (id, role, environment,
    owner), whose key authenticates it (:mod:`streams.runtime.trust`); ``record`` is the audit record
    ``value`` holds, which :mod:`streams.audit_chain` chains without parsing it again."""

    route: Route
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    agent: tuple[str, ...] | None = None
    record: AuditRecord | None = None


@dataclass(slots=True)
class Outcome:
    """What handling one message produced: the messages to send and the decision made (if any)."""

    sends: list[Send] = field(default_factory=list)
    decision: Decision | None = None
    duplicate: bool = False
    forwarded: bool = False
    leased: bool = False
    """Decided under a budget lease (docs/leases.md)."""
    waiting: bool = False
    """Held for the answer to a lease ask."""
    record_ms: int | None = None
    """When the intent behind ``decision`` was taken in, if not with the message handled (an intent that
    waited for a lease, decided when the lease came)."""


def now_ms() -> int:
    """The worker's wall clock in ms."""
    return time.time_ns() // 1_000_000


def utc(now_ms: int) -> datetime:
    """A wall-clock time in ms as an aware datetime."""
    return datetime.fromtimestamp(now_ms / 1000, UTC)


def approval_request(
    intent: Intent, decision: Decision, policy: CompiledPolicy | None, now_ms: int,
) -> ApprovalRequest:
    """The request for a REQUIRE_APPROVAL: the approval settings of the rule that required it, and a
    deadline on the worker's wall clock (``now_ms`` + timeout; intents may be stamped in the past)."""
    settings = policy.approval_for(decision.rules) if policy is not None else Approval()
    return new_request(
        intent, decision, now=utc(now_ms), approver_group=settings.group, quorum=settings.quorum,
        timeout=timedelta(milliseconds=duration_ms(settings.timeout)), channel=settings.channel,
    )


def decision_sends(
    intent: Intent | None, decision: Decision, request: ApprovalRequest | None = None,
) -> tuple[Decision, list[Send]]:
    """The decision as sent (keyed by agent id) and its audit record; REQUIRE_APPROVAL goes out
    pending, with the deadline and the action digest of its ``request`` (a reviewer approves that
    action; the SDK checks it). The engine stamped ``decided_at`` with the worker's clock (the intent's
    event time may be long past, and would misplace the decision in the audit)."""
    if decision.decision is _APPROVAL and decision.final:
        if request is None:
            raise ValueError(f"request {decision.request_id}: a REQUIRE_APPROVAL needs its approval request")
        decision = decision.model_copy(update={"final": False, "approval_deadline_at": request.deadline_at,
                                               "intent_digest": request.intent_digest})
    return decision, publish_sends(intent, decision)


def publish_sends(intent: Intent | None, decision: Decision) -> list[Send]:
    """A decision as it is (keyed by agent id) and its audit record."""
    final = "final" if decision.final else "pending"
    audit = AuditRecord(
        event_id=f"{decision.request_id}:decision:{final}", event_type=AuditEventType.DECISION,
        event_time=decision.decided_at, request_id=decision.request_id, intent=intent, decision=decision,
    )
    body = decision.model_dump_json().encode()
    return [answer_send(intent, decision, body), audit_send(audit, body)]


def answer_send(intent: Intent | None, decision: Decision, value: bytes) -> Send:
    """The decision ``value`` on its way to the agent: on the replies topic keyed by the intent's
    ``reply_key`` when the intent names one and was admitted (its authenticator, which covers the key,
    verified; docs/replies.md), else on the decisions topic keyed by agent id."""
    refused = bool(decision.determining) and decision.determining[0] in _REFUSED
    if intent is not None and intent.reply_key is not None and not refused:
        return Send(Route.REPLIES, intent.reply_key.encode(), value, agent=agent_of(intent))
    return Send(Route.DECISIONS, decision.agent_id.encode(), value, agent=agent_of(intent))


def agent_of(intent: Intent | None) -> tuple[str, ...] | None:
    """Whose key authenticates a decision on ``intent`` (None: no valid intent, nobody's)."""
    return None if intent is None else agent_names(intent.agent_id, intent.agent_role, intent.environment,
                                                   intent.agent_owner)


def security_send(intent: Intent, decision: Decision) -> Send:
    """The audit record of an intent refused before the policy saw it (credentials, partition, a reused
    request id): a security event, besides the decision's own record."""
    audit = AuditRecord(
        event_id=f"{decision.request_id}:security:{decision.determining[0]}:{intent.digest()[:16]}",
        event_type=AuditEventType.SECURITY, event_time=decision.decided_at, request_id=decision.request_id,
        intent=intent, decision=decision, note=decision.reasons[0][:2000],
    )
    return audit_send(audit)


def audit_send(record: AuditRecord, decision_json: bytes | None = None) -> Send:
    """An audit record to send, keyed by its request id; ``decision_json``: its decision as already
    serialised (for the agent), which goes into the record's JSON as is instead of being encoded again."""
    body = record.model_dump_json().encode() if decision_json is None else _audit_json(record, decision_json)
    return Send(Route.AUDIT, str(record.request_id).encode(), body, record=record)


def _audit_json(record: AuditRecord, decision_json: bytes) -> bytes:
    """``record.model_dump_json()``, its decision spliced in as ``decision_json`` (the same bytes: the
    fields after ``decision`` are null in a decision's record, else the record is encoded whole)."""
    rest = record.model_dump_json(exclude=_DECISION).encode()
    if not rest.endswith(_AFTER_DECISION):
        return record.model_dump_json().encode()
    return rest[:-len(_AFTER_DECISION)] + b',"decision":' + decision_json + _AFTER_DECISION


def approval_final_sends(intent: Intent, decision: Decision) -> list[Send]:
    """An approval's final decision: like any decision, plus its copy on the compacted approval-results
    topic (keyed by request id), where reviewers' tools find it without reading the fleet's decisions."""
    sends = publish_sends(intent, decision)
    return [*sends, Send(Route.APPROVAL_RESULTS, str(decision.request_id).encode(), sends[0].value)]


def dead_letter(
    key: bytes | None, value: bytes | None, error: Exception | str,
    source: tuple[str, int, int] | None = None,
) -> Send:
    """A message no stage could handle, parked on the dead-letter topic with the error and its ``source``
    (topic, partition, offset) in the headers (:func:`schemas.topics.dead_letter_headers`); cut to
    :data:`MAX_DEAD_LETTER_BYTES`, with its original size, when larger."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    value = value or b""
    size = len(value) if len(value) > MAX_DEAD_LETTER_BYTES else None
    topic, partition, offset = source or (None, None, None)
    headers = dead_letter_headers(text, topic, partition, offset, size)
    return Send(Route.DEAD_LETTER, (key or b"")[:1024], value[:MAX_DEAD_LETTER_BYTES], tuple(headers))


def ignore_decision(decision: Decision) -> None:
    """The default hook: nothing to do."""


def count_send(count: Count) -> Send:
    return Send(Route.SHARED, count.changes[0].key.encode(), count.model_dump_json().encode())


def forward_send(forward: Forward) -> Send:
    return Send(Route.SHARED, forward.keys[0].encode(), forward.model_dump_json().encode())


def request_of(
    intent: Intent, decision: Decision, policy: CompiledPolicy | None, now_ms: int,
) -> ApprovalRequest | None:
    return approval_request(intent, decision, policy, now_ms) if decision.decision is _APPROVAL else None


def open_send(pending: Pending) -> Send:
    body = Open(request=pending.request, policy_name=pending.decision.policy_name).model_dump_json().encode()
    return Send(Route.APPROVAL_CONTROL, str(pending.request.request_id).encode(), body)


def stopped_waiting(intent: Intent, now_ms: int) -> bool:
    """Whether the intent's agent stopped waiting for its decision (``wait_until``) before ``now_ms``."""
    return intent.wait_until is not None and now_ms > int(intent.wait_until.timestamp() * 1000)


def wait_expired(intent: Intent, stage1: Decision, now_ms: int) -> Decision:
    """BLOCK ``wait_expired`` for an intent decided only after its agent stopped waiting (a lease's
    answer or the last hop came too late): the agent was told the decision was unavailable, and nothing
    may contradict that. Under the policy of ``stage1``, the decision it had so far."""
    assert intent.wait_until is not None
    at = utc(now_ms)
    detail = f"the agent stopped waiting at {intent.wait_until.isoformat()}; decided at {at.isoformat()}"
    return blocked(intent, None, WAIT_EXPIRED, detail, at).model_copy(
        update={"policy_version": stage1.policy_version, "policy_name": stage1.policy_name})
