"""The approval stage: pending approvals, reviewers' verdicts and deadlines, durable in a table.

Where an approval lives. Verdicts come back on the public ``approvals`` topic keyed by request id and
name no agent. So pending approvals are kept in the ``approval-state`` table, co-partitioned with
``approvals``: the decide stage (the agent's partition, :mod:`streams.stages.decide`) parks the intent
and sends an :class:`~streams.messages.Open` keyed by request id to the internal ``approval-control``
topic, which has the partition count of ``approvals``. With Kafka's default (murmur2) partitioner the
Open and every verdict of one request land on the same partition number, which the worker's consumer
group assigns to one worker together with the table's changelog partition, where one loop handles them
in order. The other choice, re-keying each verdict to its agent's partition, needs the same request ->
agent table keyed by request id anyway, plus one more hop per verdict.

The flow:
1. the decide stage sends the pending decision at once (``final=False``, the wall-clock deadline) and
   the Open;
2. here an Open opens a :class:`~streams.stages.approval_machine.PendingApproval` and publishes the
   ApprovalRequest (approval-requests topic) and its ``APPROVAL_REQUESTED`` audit record;
3. a verdict is applied with :func:`~streams.stages.approval_machine.apply_verdict` (``now`` = the verdict
   record's Kafka timestamp) and audited, accepted or rejected with why (``unknown_request`` for an id with no
   approval here); reviewers come from :class:`Reviewers` (no file: nobody can approve);
4. once resolved (approved, denied, or expired by a late verdict or the timer) a
   :class:`~streams.messages.Resolved` goes to the agent's partition. A denied or expired approval's
   final BLOCK goes out from here at once (decisions topic keyed by agent id, the pending decision's
   route, and the audit). An approved action is counted first: the decide stage counts its agent windows and
   history, a chain of ``Count`` hops its shared windows, and whichever counts last sends the final
   ALLOW, so no intent the agent sends on hearing of it can slip under a limit it fills.

Deadlines are enforced here, by the runner's tick (:meth:`ApprovalStage.expire_due`): once a second,
under the runner's lock, for each partition it owns whose approvals and approval-control records are
handled up to what the broker had, it expires the pending approvals whose deadline passed
:data:`EXPIRY_GRACE_MS` ago (``now`` = the worker's clock) and forgets the closed ones past their
retention. The grace and the caught-up check keep a verdict recorded before the deadline (judged by its
record's timestamp) from being overtaken by the expiry. The due times come from an in-memory index per
partition, kept by this stage's writes and rebuilt from the table when a partition is taken over
(:meth:`ApprovalStage.took_over`), so a tick reads no table.

An expiry is not the answer to a Kafka record, so no redelivery would repeat its outputs: it also
writes an outbox marker (``o|<request_id>``), deleted once the producer flushed its outputs
(:meth:`ApprovalStage.flushed`). A worker that takes the partition over after a crash re-sends the
finals of the markers it finds; the receivers ignore a final they already have.

Idempotency. Verdicts are identified by a digest of their content. The entry
keeps the verdicts it accepted and the message that closed it, and the final decision is computed once
and stored: a redelivered verdict that already acted re-sends its outputs (same ids and bytes)
and changes nothing, a duplicate Open re-publishes the request only while it is pending. So nothing is
counted twice and no two different finals are ever sent. Closed approvals are kept ``retention_ms``
(late verdicts are rejected as ``not_pending``, redeliveries replayed), then dropped by the tick.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from uuid import UUID

from pydantic import ValidationError

from schemas.approval import ApprovalRequest, ApprovalVerdict
from schemas.audit import AuditEventType, AuditRecord
from schemas.common import DecisionKind
from schemas.decision import Decision
from streams.messages import ApprovalEntry, Open, Resolved
from streams.stages.approval_machine import (
    ApprovalError,
    PendingApproval,
    RejectReason,
    Resolution,
    ReviewerDirectory,
    VerdictResult,
    apply_verdict,
    expire,
    final_decision,
    open_pending,
    requested_audit,
    verdict_audit,
)
from streams.stages.outputs import (
    Route,
    Send,
    approval_final_sends,
    audit_send,
    dead_letter,
    ignore_decision,
    utc,
)
from streams.stages.retention import DEFAULT_RETENTION_MS
from streams.state.table_state import BytesTable

log = logging.getLogger(__name__)
APPROVAL_PREFIX = "a|"
DUE_PREFIX = "t|"
OUTBOX_PREFIX = "o|"
EXPIRED_BY = "expiry"
"""``closed_by`` of an approval the tick expired."""
EXPIRY_GRACE_MS = 1_000
"""How long after its deadline a pending approval is expired: a verdict recorded just before the
deadline is handled first."""
UNKNOWN_REQUEST = "unknown_request"
TRUST_OFF = ("", "")
"""The signer of every verdict when trust is off: nothing is checked."""
Signer = tuple[str, str] | str
"""(kind, name) of who signed a verdict record, or why it did not verify."""


class Reviewers:
    """The approver groups: a YAML file (re-read when it changes; a bad edit keeps the last good
    directory and is logged), or nobody at all when there is no file (every verdict is rejected)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.current = ReviewerDirectory()
        self._stamp: tuple[int, int] | None = None
        if path is not None:
            self.current = ReviewerDirectory.load(path)  # a bad file at start: ApprovalError
            self._stamp = _stamp(path)

    def refresh(self) -> None:
        """Reload the file if it changed since it was last read."""
        if self.path is None:
            return
        try:
            stamp = _stamp(self.path)
            if stamp != self._stamp:
                self.current = ReviewerDirectory.load(self.path)
                self._stamp = stamp
                log.info("reloaded the reviewer directory %s", self.path)
        except (OSError, ApprovalError) as exc:
            log.error("keeping the previous reviewer directory: %s", exc)


def _stamp(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_mtime_ns, info.st_size


def verdict_id(verdict: ApprovalVerdict) -> str:
    """A verdict's identity: the digest :func:`streams.stages.approval_machine.verdict_audit` names it by."""
    return hashlib.sha256(verdict.model_dump_json().encode()).hexdigest()[:32]


class ApprovalStage:
    """Opens, decides and expires approvals on the partitions of the approvals topic."""

    def __init__(
        self, table: BytesTable, reviewers: Reviewers, retention_ms: int = DEFAULT_RETENTION_MS,
    ) -> None:
        self.table = table
        self.reviewers = reviewers
        self.retention_ms = retention_ms
        self.on_refused: Callable[[Decision], None] = ignore_decision
        """Called once per denied or expired approval, with its final BLOCK (the metrics' hook); an
        approved one is reported by the decide stage, which records it."""
        self._due: dict[int, dict[UUID, int]] = {}
        """Per partition owned: request id -> when the tick has to act on it (ms)."""
        self._unsent: dict[int, list[UUID]] = {}
        """Per partition: expiries whose outbox marker goes once the producer flushed their outputs."""

    # -- the table -----------------------------------------------------------------------------

    def entry(self, request_id: UUID) -> ApprovalEntry | None:
        """The approval of ``request_id`` kept here, or None."""
        raw = self.table.get(f"{APPROVAL_PREFIX}{request_id}")
        return None if raw is None else ApprovalEntry.model_validate_json(raw)

    def _write(self, entry: ApprovalEntry, partition: int) -> None:
        request_id = entry.state.request_id
        self.table[f"{APPROVAL_PREFIX}{request_id}"] = entry.model_dump_json(exclude_defaults=True).encode()
        due_ms = self._due_ms(entry)
        self.table[f"{DUE_PREFIX}{request_id}"] = f"{due_ms}:{partition}".encode()
        self._due.setdefault(partition, {})[request_id] = due_ms

    def _due_ms(self, entry: ApprovalEntry) -> int:
        state = entry.state
        if state.is_pending:
            return _ms(state.deadline_at) + EXPIRY_GRACE_MS
        return _ms(state.closed_at or state.deadline_at) + self.retention_ms

    def _forget(self, request_id: UUID, partition: int) -> None:
        self.table.pop(f"{APPROVAL_PREFIX}{request_id}", None)
        self.table.pop(f"{DUE_PREFIX}{request_id}", None)
        self._due.get(partition, {}).pop(request_id, None)

    # -- partitions ----------------------------------------------------------------------------

    def took_over(self, partition: int) -> list[Send]:
        """A partition just restored (its table in use): index its due times, and re-send the finals
        of expiries whose outputs may not have been flushed before the last owner stopped."""
        due: dict[UUID, int] = {}
        unsent: list[UUID] = []
        for key, value in list(self.table.items()):
            if key.startswith(DUE_PREFIX):
                due[UUID(key[len(DUE_PREFIX):])] = int(value.decode().partition(":")[0])
            elif key.startswith(OUTBOX_PREFIX):
                unsent.append(UUID(key[len(OUTBOX_PREFIX):]))
        self._due[partition] = due
        sends: list[Send] = []
        for request_id in unsent:
            entry = self.entry(request_id)
            if entry is not None and entry.final is not None:
                sends += _final_sends(entry)
        self._unsent[partition] = unsent
        return sends

    def gave_up(self, partition: int) -> None:
        """A partition another worker owns now."""
        self._due.pop(partition, None)
        self._unsent.pop(partition, None)

    def flushed(self, partition: int) -> None:
        """The producer delivered everything sent so far: the expiries' outbox markers can go."""
        for request_id in self._unsent.pop(partition, []):
            self.table.pop(f"{OUTBOX_PREFIX}{request_id}", None)

    def expire_due(self, partition: int, now_ms: int) -> list[Send]:
        """The tick on one partition (its table in use): expire the pending approvals past their
        deadline and the grace, forget the closed ones past their retention."""
        due = self._due.get(partition, {})
        sends: list[Send] = []
        for request_id in [r for r, at_ms in due.items() if at_ms <= now_ms]:
            entry = self.entry(request_id)
            if entry is None:
                due.pop(request_id, None)
            elif entry.state.is_pending:
                sends += self._expire(entry, partition, now_ms)
            else:
                self._forget(request_id, partition)
        return sends

    def _expire(self, entry: ApprovalEntry, partition: int, now_ms: int) -> list[Send]:
        now = utc(now_ms)
        expired = expire(entry.state, now)
        if expired is None:  # not past its deadline (cannot happen after the grace): look again later
            self._due.setdefault(partition, {})[entry.state.request_id] = now_ms + EXPIRY_GRACE_MS
            return []
        request_id = entry.state.request_id
        self.table[f"{OUTBOX_PREFIX}{request_id}"] = b"1"
        self._unsent.setdefault(partition, []).append(request_id)
        return self._close(entry, expired[0], expired[1], EXPIRED_BY, now, partition)

    # -- messages ------------------------------------------------------------------------------

    def handle_open(self, message: Open, partition: int) -> list[Send]:
        """Open the approval (once) and publish its request; a duplicate re-publishes a pending one.

        Request ids are unique per agent only: an Open for an id already open for another agent or
        action is refused (audited), never merged into that approval."""
        request = message.request
        entry = self.entry(request.request_id)
        if entry is None:
            entry = ApprovalEntry(state=open_pending(request), policy_name=message.policy_name)
            self._write(entry, partition)
        else:
            kept = entry.state.request
            if (kept.intent.agent_id, kept.intent_digest) != (request.intent.agent_id, request.intent_digest):
                return [_audit_send(_conflict_audit(request))]
            if not entry.state.is_pending:
                return []
        return _request_sends(entry.state.request)

    def handle_verdict(
        self, raw: bytes, key: bytes | None, partition: int, now_ms: int, signer: Signer = TRUST_OFF,
    ) -> list[Send]:
        """Apply one verdict at its record's time ``now_ms``; audit it, send the final when resolved.

        ``signer`` is who authenticated the record: ``("reviewer", name)``, ``("bot", name)``, an error
        text when it did not verify, or :data:`TRUST_OFF`. A reviewer may sign only verdicts in their own
        name, a bot only verdicts from Slack; anything else is rejected as ``unauthenticated``."""
        try:
            verdict = ApprovalVerdict.model_validate_json(raw)
        except ValidationError as exc:
            return [dead_letter(key, raw, f"invalid_verdict: {exc}")]
        now, vid = utc(now_ms), verdict_id(verdict)
        entry = self.entry(verdict.request_id)
        if entry is None:
            return [_audit_send(_unknown_audit(verdict, vid, now))]
        problem = _unauthenticated(verdict, signer, self.reviewers.current)
        if problem is not None:  # before anything else: an unsigned copy of a verdict replays nothing
            refused = VerdictResult(False, RejectReason.UNAUTHENTICATED, problem, entry.state)
            return [_audit_send(verdict_audit(refused, verdict, now))]
        seen = {item[0]: item for item in entry.seen}
        if vid in seen:  # redelivered: the same audit (and final) again, nothing applied twice
            _, reason, detail = seen[vid]
            result = VerdictResult(not reason, RejectReason(reason) if reason else None, detail, entry.state)
            replay = [_audit_send(verdict_audit(result, verdict, now))]
            return replay + (_final_sends(entry) if entry.closed_by == vid else [])
        result = apply_verdict(entry.state, verdict, self.reviewers.current, now)
        sends = [_audit_send(verdict_audit(result, verdict, now))]
        if not result.accepted and result.resolution is None:
            return sends  # rejected, nothing changed: a redelivery is rejected the same way
        reason = result.reason.value if result.reason else ""
        entry = entry.model_copy(update={"seen": (*entry.seen, (vid, reason, result.detail))})
        if result.resolution is None:
            self._write(entry.model_copy(update={"state": result.state}), partition)
            return sends
        return sends + self._close(entry, result.state, result.resolution, vid, now, partition)

    def _close(
        self, entry: ApprovalEntry, state: PendingApproval, resolution: Resolution, closed_by: str,
        now: datetime, partition: int,
    ) -> list[Send]:
        final = final_decision(state, resolution, now).model_copy(update={"policy_name": entry.policy_name})
        entry = entry.model_copy(update={"state": state, "closed_by": closed_by, "final": final})
        self._write(entry, partition)
        if final.decision is not DecisionKind.ALLOW:
            self.on_refused(final)
        return _final_sends(entry)


def _unauthenticated(verdict: ApprovalVerdict, signer: Signer, reviewers: ReviewerDirectory) -> str | None:
    """Why ``signer`` may not give ``verdict``, or None. A bot signs only for the reviewers the
    reviewers file lists under its name (``bots: {slack-bot: [lena, marco]}``)."""
    if signer is TRUST_OFF:
        return None
    if isinstance(signer, str):
        return signer
    kind, name = signer
    if kind == "reviewer" and name != verdict.reviewer:
        return f"signed by reviewer {name}, not by {verdict.reviewer}"
    if kind == "bot" and verdict.source != "slack":
        return f"signed by bot {name}, but its source is {verdict.source}"
    if kind == "bot" and not reviewers.bot_may_sign(name, verdict.reviewer):
        return f"bot {name} may not sign for {verdict.reviewer} (the reviewers file's bots)"
    return None


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _audit_send(record: AuditRecord) -> Send:
    return audit_send(record)


def _request_sends(request: ApprovalRequest) -> list[Send]:
    key = str(request.request_id).encode()
    return [Send(Route.APPROVAL_REQUESTS, key, request.model_dump_json().encode()),
            _audit_send(requested_audit(request))]


def _final_sends(entry: ApprovalEntry) -> list[Send]:
    """The Resolved for the decide stage and, for a denied or expired approval, the final decision (the
    pending one's route) with its audit record. An approved one is sent once its limits have counted it (by
    the decide stage or the last shared hop), so no later intent can slip under a limit it fills."""
    final = entry.final
    assert final is not None
    resolved = Resolved(decision=final).model_dump_json().encode()
    feedback = Send(Route.FEEDBACK, final.agent_id.encode(), resolved)
    if final.decision is DecisionKind.ALLOW:
        return [feedback]
    return [*approval_final_sends(entry.state.intent, final), feedback]


def _conflict_audit(request: ApprovalRequest) -> AuditRecord:
    kind = AuditEventType.SECURITY
    return AuditRecord(
        event_id=f"{request.request_id}:security:approval_conflict:{request.intent_digest[:16]}",
        event_type=kind, event_time=request.created_at, request_id=request.request_id, intent=request.intent,
        approval_request=request,
        note=(f"request_id_reused: an approval {request.request_id} is already open for another agent or "
              f"action; this one ({request.intent.agent_id}) was not opened"),
    )


def _unknown_audit(verdict: ApprovalVerdict, vid: str, now: datetime) -> AuditRecord:
    kind = AuditEventType.VERDICT_REJECTED
    return AuditRecord(
        event_id=f"{verdict.request_id}:{kind.value}:{vid}", event_type=kind, event_time=now,
        request_id=verdict.request_id, verdict=verdict,
        note=f"{UNKNOWN_REQUEST}: no approval {verdict.request_id} is open or known",
    )


__all__ = ["UNKNOWN_REQUEST", "ApprovalStage", "Reviewers", "verdict_id"]
