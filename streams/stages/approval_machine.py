"""The approval state machine: pure, no Kafka, no clock (every time is passed in).

A REQUIRE_APPROVAL decision opens a :class:`PendingApproval`; reviewers' verdicts are applied with
:func:`apply_verdict` and the deadline with :func:`expire`. A verdict is accepted only when the request
is still pending and before its deadline, names the digest of the exact intent, comes from a member of
the approver group who is neither the agent nor its owner, and (for APPROVE) is not a second approval by
the same reviewer. ``quorum`` APPROVEs make the final decision ALLOW; one accepted DENY makes it BLOCK;
the deadline makes it BLOCK with reason ``approval_expired``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Literal
from uuid import UUID

import yaml
from pydantic import ValidationError

from schemas import (
    SCHEMA_VERSION,
    ApprovalRequest,
    ApprovalVerdict,
    AuditEventType,
    AuditRecord,
    Decision,
    DecisionKind,
    Intent,
    VerdictKind,
)
from schemas.common import UtcDatetime, WireModel
from schemas.decision import APPROVAL_DENIED, APPROVAL_EXPIRED, APPROVAL_GRANTED

DEFAULT_APPROVER_GROUP = "reviewers"
DEFAULT_APPROVAL_TIMEOUT = timedelta(minutes=15)
CLOCK_SKEW = timedelta(minutes=1)
"""How far a reviewer's clock may lag the workers': a verdict made earlier than the request it answers
(less this) was made before anyone could see the request, and is rejected."""


class ApprovalError(ValueError):
    """Bad input to the approval state machine (not a rejected verdict: those are results)."""


class ApprovalStatus(StrEnum):
    """Where a pending approval is in its life."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


class RejectReason(StrEnum):
    """Why a verdict was not accepted; machine-readable, stored in the audit note."""

    REQUEST_MISMATCH = "request_mismatch"
    NOT_PENDING = "not_pending"
    EXPIRED = "expired"
    DIGEST_MISMATCH = "digest_mismatch"
    SELF_APPROVAL = "self_approval"
    NOT_IN_GROUP = "not_in_group"
    DUPLICATE_REVIEWER = "duplicate_reviewer"
    OLDER_THAN_REQUEST = "older_than_request"
    UNAUTHENTICATED = "unauthenticated"


def _norm(identity: str) -> str:
    return identity.strip().casefold()


class ReviewerDirectory:
    """Approver groups and their members; identities compare case-insensitively."""

    def __init__(
        self, groups: dict[str, frozenset[str]] | None = None, bots: dict[str, frozenset[str]] | None = None,
    ) -> None:
        self._groups = {name: frozenset(map(_norm, members)) for name, members in (groups or {}).items()}
        self._bots = {name: frozenset(map(_norm, members)) for name, members in (bots or {}).items()}

    @classmethod
    def from_mapping(cls, data: object, source: str = "<mapping>") -> ReviewerDirectory:
        """Build from ``{"groups": {group: [member, ...]}, "bots": {bot: [reviewer, ...]}}`` (``bots``
        optional: the reviewers each bot credential may sign verdicts for); raise ApprovalError on any
        other shape."""
        if not isinstance(data, dict) or not isinstance(data.get("groups"), dict):
            raise ApprovalError(f"{source}: expected a mapping with a 'groups' mapping of group -> members")
        bots = data.get("bots", {})
        if not isinstance(bots, dict):
            raise ApprovalError(f"{source}: 'bots' must map each bot to the reviewers it may sign for")
        return cls(_named_lists(data["groups"], "group", source), _named_lists(bots, "bot", source))

    @classmethod
    def load(cls, path: Path) -> ReviewerDirectory:
        """Read a YAML file ``groups: {payments-reviewers: [alice, bob]}``."""
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ApprovalError(f"cannot read reviewer directory {path}: {exc}") from exc
        return cls.from_mapping(data, str(path))

    def members(self, group: str) -> frozenset[str]:
        """Normalised members of a group; empty for an unknown group (which therefore approves nothing)."""
        return self._groups.get(group, frozenset())

    def is_member(self, group: str, reviewer: str) -> bool:
        """True when ``reviewer`` belongs to ``group``."""
        return _norm(reviewer) in self.members(group)

    def bot_may_sign(self, bot: str, reviewer: str) -> bool:
        """True when the bot credential ``bot`` may sign verdicts in ``reviewer``'s name."""
        return _norm(reviewer) in self._bots.get(bot, frozenset())


def _named_lists(data: dict[object, object], what: str, source: str) -> dict[str, frozenset[str]]:
    """``{name: [reviewer, ...]}`` checked: non-empty names, lists of non-empty reviewer names."""
    result: dict[str, frozenset[str]] = {}
    for name, members in data.items():
        if not isinstance(name, str) or not name:
            raise ApprovalError(f"{source}: {what} names must be non-empty strings, got {name!r}")
        if not isinstance(members, list) or not all(isinstance(m, str) and m.strip() for m in members):
            raise ApprovalError(f"{source}: {what} {name!r} must be a list of non-empty reviewer names")
        result[name] = frozenset(members)
    return result


class PendingApproval(WireModel):
    """The durable state of one approval, kept in a changelog-backed table keyed by request id."""

    v: Literal[1] = SCHEMA_VERSION
    request: ApprovalRequest
    status: ApprovalStatus = ApprovalStatus.PENDING
    approved_by: tuple[str, ...] = ()
    denied_by: str | None = None
    deny_reason: str | None = None
    closed_at: UtcDatetime | None = None

    @property
    def request_id(self) -> UUID:
        return self.request.request_id

    @property
    def intent(self) -> Intent:
        return self.request.intent

    @property
    def intent_digest(self) -> str:
        return self.request.intent_digest

    @property
    def approver_group(self) -> str:
        return self.request.approver_group

    @property
    def quorum(self) -> int:
        return self.request.quorum

    @property
    def deadline_at(self) -> datetime:
        return self.request.deadline_at

    @property
    def is_pending(self) -> bool:
        return self.status is ApprovalStatus.PENDING

    def to_bytes(self) -> bytes:
        """Compact JSON for a table value (defaults omitted)."""
        return self.model_dump_json(exclude_defaults=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> PendingApproval:
        """Inverse of :meth:`to_bytes`; raises ApprovalError on a corrupt value."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise ApprovalError(f"corrupt pending approval: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Resolution:
    """The final outcome of an approval: what the agent finally gets. ``reasons`` start with the
    marker of how it ended (``approval_granted``, ``approval_denied`` or ``approval_expired``)."""

    decision: DecisionKind
    reasons: tuple[str, ...]
    approved_by: tuple[str, ...] = ()

    @property
    def marker(self) -> str:
        """How the approval ended: ``approval_granted``, ``approval_denied`` or ``approval_expired``."""
        return self.reasons[0]


@dataclass(frozen=True, slots=True)
class VerdictResult:
    """What applying one verdict did. ``resolution`` is set when the approval just became final."""

    accepted: bool
    reason: RejectReason | None
    detail: str
    state: PendingApproval
    resolution: Resolution | None = None

    @property
    def final_decision_kind(self) -> DecisionKind | None:
        return self.resolution.decision if self.resolution else None


def new_request(
    intent: Intent,
    decision: Decision,
    *,
    now: datetime,
    approver_group: str = DEFAULT_APPROVER_GROUP,
    quorum: int = 1,
    timeout: timedelta = DEFAULT_APPROVAL_TIMEOUT,
    channel: str | None = None,
) -> ApprovalRequest:
    """The ApprovalRequest for a REQUIRE_APPROVAL decision; the request id is the intent's."""
    if timeout <= timedelta(0):
        raise ApprovalError(f"approval timeout must be positive, got {timeout}")
    return ApprovalRequest(
        request_id=intent.request_id, intent=intent, intent_digest=intent.digest(),
        reasons=decision.reasons, rules=decision.rules, determining=decision.determining, risk=decision.risk,
        policy_version=decision.policy_version, approver_group=approver_group, quorum=quorum,
        channel=channel, created_at=now, deadline_at=now + timeout,
    )


def open_pending(request: ApprovalRequest) -> PendingApproval:
    """A new pending approval; the request's digest must be the digest of its own intent."""
    if request.intent_digest != request.intent.digest():
        raise ApprovalError(f"request {request.request_id}: intent_digest does not match its intent")
    if request.intent.request_id != request.request_id:
        raise ApprovalError(
            f"request {request.request_id}: the intent has request id {request.intent.request_id}"
        )
    return PendingApproval(request=request)


def _is_self(pending: PendingApproval, reviewer: str, reviewers: ReviewerDirectory) -> bool:
    """The agent itself, its owner, or (when the owner is a team in the directory) a member of that team."""
    who = _norm(reviewer)
    owner = pending.intent.agent_owner
    if who == _norm(pending.intent.agent_id):
        return True
    return owner is not None and (who == _norm(owner) or reviewers.is_member(owner, reviewer))


def _check(
    pending: PendingApproval, verdict: ApprovalVerdict, reviewers: ReviewerDirectory
) -> tuple[RejectReason, str] | None:
    """The first reason to reject ``verdict`` (deadline aside), or None."""
    if verdict.request_id != pending.request_id:
        return RejectReason.REQUEST_MISMATCH, f"verdict is for {verdict.request_id}"
    if not pending.is_pending:
        return RejectReason.NOT_PENDING, f"approval is already {pending.status.value}"
    if verdict.intent_digest != pending.intent_digest:
        return RejectReason.DIGEST_MISMATCH, "verdict names another action's digest"
    if verdict.decided_at < pending.request.created_at - CLOCK_SKEW:
        return RejectReason.OLDER_THAN_REQUEST, "verdict was made before the request was opened"
    if _is_self(pending, verdict.reviewer, reviewers):
        return RejectReason.SELF_APPROVAL, f"{verdict.reviewer} is the agent or its owner"
    if not reviewers.is_member(pending.approver_group, verdict.reviewer):
        return RejectReason.NOT_IN_GROUP, f"{verdict.reviewer} is not in group {pending.approver_group}"
    already = {_norm(r) for r in pending.approved_by}
    if verdict.verdict is VerdictKind.APPROVE and _norm(verdict.reviewer) in already:
        return RejectReason.DUPLICATE_REVIEWER, f"{verdict.reviewer} already approved"
    return None


def apply_verdict(
    pending: PendingApproval, verdict: ApprovalVerdict, reviewers: ReviewerDirectory, now: datetime
) -> VerdictResult:
    """Apply one verdict at processor time ``now``.

    A verdict at or after the deadline is rejected as ``expired`` and, if the approval was still
    pending, also expires it (the result then carries the final BLOCK) so nothing waits for a timer.
    """
    expired = expire(pending, now) if verdict.request_id == pending.request_id else None
    if expired is not None:
        late = "verdict arrived after the deadline"
        return VerdictResult(False, RejectReason.EXPIRED, late, expired[0], expired[1])
    problem = _check(pending, verdict, reviewers)
    if problem is not None:
        return VerdictResult(False, problem[0], problem[1], pending)
    if verdict.verdict is VerdictKind.DENY:
        return _deny(pending, verdict, now)
    approved_by = (*pending.approved_by, verdict.reviewer)
    if len(approved_by) < pending.quorum:
        state = pending.model_copy(update={"approved_by": approved_by})
        return VerdictResult(True, None, f"approval {len(approved_by)} of {pending.quorum}", state)
    update = {"status": ApprovalStatus.APPROVED, "approved_by": approved_by, "closed_at": now}
    granted_by = f"approved by {', '.join(approved_by)}"
    granted = Resolution(DecisionKind.ALLOW, (APPROVAL_GRANTED, granted_by), approved_by)
    return VerdictResult(True, None, "approved", pending.model_copy(update=update), granted)


def _deny(pending: PendingApproval, verdict: ApprovalVerdict, now: datetime) -> VerdictResult:
    reason = verdict.reason or "no reason given"
    update: dict[str, object] = {"status": ApprovalStatus.DENIED, "closed_at": now}
    update |= {"denied_by": verdict.reviewer, "deny_reason": reason}
    denied = f"denied by {verdict.reviewer}: {reason}"
    resolution = Resolution(DecisionKind.BLOCK, (APPROVAL_DENIED, denied), pending.approved_by)
    return VerdictResult(True, None, "denied", pending.model_copy(update=update), resolution)


def expire(pending: PendingApproval, now: datetime) -> tuple[PendingApproval, Resolution] | None:
    """If still pending at or after the deadline: the expired state and its final BLOCK; else None."""
    if not pending.is_pending or now < pending.deadline_at:
        return None
    state = pending.model_copy(update={"status": ApprovalStatus.EXPIRED, "closed_at": now})
    return state, Resolution(DecisionKind.BLOCK, (APPROVAL_EXPIRED,), pending.approved_by)


def pending_decision(request: ApprovalRequest, now: datetime) -> Decision:
    """The non-final REQUIRE_APPROVAL decision the agent receives at once."""
    return Decision(
        request_id=request.request_id, agent_id=request.intent.agent_id,
        decision=DecisionKind.REQUIRE_APPROVAL, reasons=request.reasons, rules=request.rules,
        determining=request.determining, risk=request.risk, policy_version=request.policy_version,
        decided_at=now, final=False,
        approval_deadline_at=request.deadline_at, intent_digest=request.intent_digest,
    )


def final_decision(pending: PendingApproval, resolution: Resolution, now: datetime) -> Decision:
    """The final decision sent on the agent's decision route once the approval is resolved: determined
    by how the approval ended, then by what required the approval."""
    request = pending.request
    return Decision(
        request_id=request.request_id, agent_id=request.intent.agent_id, decision=resolution.decision,
        reasons=(*resolution.reasons, *request.reasons), rules=request.rules,
        determining=(resolution.marker, *request.determining), risk=request.risk,
        policy_version=request.policy_version, decided_at=now, final=True,
        approval_deadline_at=request.deadline_at, approved_by=resolution.approved_by,
        intent_digest=request.intent_digest,
    )


def requested_audit(request: ApprovalRequest) -> AuditRecord:
    """The audit record of a newly opened approval."""
    return AuditRecord(
        event_id=f"{request.request_id}:approval_requested", event_type=AuditEventType.APPROVAL_REQUESTED,
        event_time=request.created_at, request_id=request.request_id, intent=request.intent,
        approval_request=request,
    )


def verdict_audit(result: VerdictResult, verdict: ApprovalVerdict, now: datetime) -> AuditRecord:
    """The audit record of a verdict; a rejection's note is ``<reason>: <detail>``."""
    digest = hashlib.sha256(verdict.model_dump_json().encode()).hexdigest()[:32]
    kind = AuditEventType.VERDICT_ACCEPTED if result.accepted else AuditEventType.VERDICT_REJECTED
    note = result.detail if result.reason is None else f"{result.reason.value}: {result.detail}"
    return AuditRecord(
        event_id=f"{verdict.request_id}:{kind.value}:{digest}", event_type=kind, event_time=now,
        request_id=verdict.request_id, verdict=verdict, note=note[:2000],
    )


__all__ = [
    "DEFAULT_APPROVAL_TIMEOUT",
    "DEFAULT_APPROVER_GROUP",
    "ApprovalError",
    "ApprovalStatus",
    "PendingApproval",
    "RejectReason",
    "Resolution",
    "ReviewerDirectory",
    "VerdictResult",
    "apply_verdict",
    "expire",
    "final_decision",
    "new_request",
    "open_pending",
    "pending_decision",
    "requested_audit",
    "verdict_audit",
]
