"""Table-driven tests of the pure approval state machine."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from schemas import AuditEventType, DecisionKind, VerdictKind
from schemas.decision import APPROVAL_DENIED, APPROVAL_EXPIRED, APPROVAL_GRANTED
from streams.stages.approval_machine import (
    ApprovalError,
    ApprovalStatus,
    PendingApproval,
    RejectReason,
    ReviewerDirectory,
    apply_verdict,
    expire,
    final_decision,
    open_pending,
    pending_decision,
    requested_audit,
    verdict_audit,
)
from tests.approvals.factories import DIRECTORY, T0, make_intent, make_request, make_verdict

A, D = VerdictKind.APPROVE, VerdictKind.DENY
OTHER_DIGEST = "f" * 64


@dataclass(frozen=True)
class Step:
    reviewer: str
    kind: VerdictKind = A
    accepted: bool = True
    reason: RejectReason | None = None
    at: timedelta = timedelta(minutes=1)
    digest: str | None = None
    other_request: bool = False


@dataclass(frozen=True)
class Case:
    name: str
    steps: tuple[Step, ...]
    final: DecisionKind | None
    status: ApprovalStatus
    quorum: int = 1
    approved_by: tuple[str, ...] = field(default=())


CASES = [
    Case(
        "one approval, quorum 1",
        (Step("alice"),),
        DecisionKind.ALLOW,
        ApprovalStatus.APPROVED,
        approved_by=("alice",),
    ),
    Case("one deny", (Step("alice", D),), DecisionKind.BLOCK, ApprovalStatus.DENIED),
    Case(
        "two of two",
        (Step("alice"), Step("bob")),
        DecisionKind.ALLOW,
        ApprovalStatus.APPROVED,
        quorum=2,
        approved_by=("alice", "bob"),
    ),
    Case(
        "one of two stays pending",
        (Step("alice"),),
        None,
        ApprovalStatus.PENDING,
        quorum=2,
        approved_by=("alice",),
    ),
    Case(
        "deny after one of two ends it",
        (Step("alice"), Step("bob", D)),
        DecisionKind.BLOCK,
        ApprovalStatus.DENIED,
        quorum=2,
        approved_by=("alice",),
    ),
    Case(
        "same reviewer twice does not make quorum",
        (Step("alice"), Step("alice", accepted=False, reason=RejectReason.DUPLICATE_REVIEWER)),
        None,
        ApprovalStatus.PENDING,
        quorum=2,
        approved_by=("alice",),
    ),
    Case(
        "duplicate reviewer is case-insensitive",
        (Step("alice"), Step(" ALICE", accepted=False, reason=RejectReason.DUPLICATE_REVIEWER)),
        None,
        ApprovalStatus.PENDING,
        quorum=2,
        approved_by=("alice",),
    ),
    Case(
        "a reviewer who approved may still deny",
        (Step("alice"), Step("alice", D)),
        DecisionKind.BLOCK,
        ApprovalStatus.DENIED,
        quorum=2,
        approved_by=("alice",),
    ),
    Case(
        "not in the group",
        (Step("zoe", accepted=False, reason=RejectReason.NOT_IN_GROUP),),
        None,
        ApprovalStatus.PENDING,
    ),
    Case(
        "unknown reviewer cannot deny either",
        (Step("mallory", D, False, RejectReason.NOT_IN_GROUP),),
        None,
        ApprovalStatus.PENDING,
    ),
    Case(
        "the owner cannot approve",
        (Step("carol", accepted=False, reason=RejectReason.SELF_APPROVAL),),
        None,
        ApprovalStatus.PENDING,
    ),
    Case(
        "the agent cannot approve itself",
        (Step("refund-bot-1", accepted=False, reason=RejectReason.SELF_APPROVAL),),
        None,
        ApprovalStatus.PENDING,
    ),
    Case(
        "replayed digest",
        (Step("alice", accepted=False, reason=RejectReason.DIGEST_MISMATCH, digest=OTHER_DIGEST),),
        None,
        ApprovalStatus.PENDING,
    ),
    Case(
        "verdict for another request",
        (Step("alice", accepted=False, reason=RejectReason.REQUEST_MISMATCH, other_request=True),),
        None,
        ApprovalStatus.PENDING,
    ),
    Case(
        "verdict after a final approval",
        (Step("alice"), Step("bob", accepted=False, reason=RejectReason.NOT_PENDING)),
        DecisionKind.ALLOW,
        ApprovalStatus.APPROVED,
        approved_by=("alice",),
    ),
    Case(
        "deny after a deny",
        (Step("alice", D), Step("bob", D, False, RejectReason.NOT_PENDING)),
        DecisionKind.BLOCK,
        ApprovalStatus.DENIED,
    ),
    Case(
        "late verdict expires the approval",
        (Step("alice", accepted=False, reason=RejectReason.EXPIRED, at=timedelta(minutes=15)),),
        DecisionKind.BLOCK,
        ApprovalStatus.EXPIRED,
    ),
    Case(
        "late verdict after one of two",
        (Step("alice"), Step("bob", accepted=False, reason=RejectReason.EXPIRED, at=timedelta(hours=1))),
        DecisionKind.BLOCK,
        ApprovalStatus.EXPIRED,
        quorum=2,
        approved_by=("alice",),
    ),
    Case(
        "a verdict just before the deadline counts",
        (Step("alice", at=timedelta(minutes=15, seconds=-1)),),
        DecisionKind.ALLOW,
        ApprovalStatus.APPROVED,
        approved_by=("alice",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_verdict_sequences(case: Case) -> None:
    request = make_request(quorum=case.quorum)
    pending = open_pending(request)
    final = None
    for step in case.steps:
        other = make_request() if step.other_request else request
        digest = step.digest or request.intent_digest
        verdict = make_verdict(other, step.reviewer, step.kind, intent_digest=digest)
        result = apply_verdict(pending, verdict, DIRECTORY, T0 + step.at)
        assert (result.accepted, result.reason) == (step.accepted, step.reason), result.detail
        assert result.detail
        if not result.accepted and result.reason is not RejectReason.EXPIRED:
            assert result.state == pending, "a rejected verdict changes nothing"
        pending = result.state
        final = result.final_decision_kind or final
    assert final == case.final
    assert pending.status is case.status
    assert pending.approved_by == case.approved_by


def test_owner_team_members_cannot_approve() -> None:
    request = make_request(make_intent(agent_owner="team-payments"))
    result = apply_verdict(open_pending(request), make_verdict(request, "dave"), DIRECTORY, T0)
    assert result.reason is RejectReason.SELF_APPROVAL
    assert apply_verdict(open_pending(request), make_verdict(request, "bob"), DIRECTORY, T0).accepted


def test_intent_without_owner_is_approvable_by_group() -> None:
    request = make_request(make_intent(agent_owner=None))
    assert apply_verdict(open_pending(request), make_verdict(request, "carol"), DIRECTORY, T0).accepted


def test_empty_directory_accepts_nobody() -> None:
    request = make_request()
    result = apply_verdict(open_pending(request), make_verdict(request), ReviewerDirectory(), T0)
    assert result.reason is RejectReason.NOT_IN_GROUP


def test_resolutions_carry_reasons_and_reviewers() -> None:
    request = make_request(quorum=2)
    first = apply_verdict(open_pending(request), make_verdict(request, "alice"), DIRECTORY, T0)
    second = apply_verdict(first.state, make_verdict(request, "bob"), DIRECTORY, T0 + timedelta(seconds=5))
    assert second.resolution is not None
    assert second.resolution.reasons == (APPROVAL_GRANTED, "approved by alice, bob")
    assert second.state.closed_at == T0 + timedelta(seconds=5)
    deny = make_verdict(request, "bob", D, reason="too big")
    denied = apply_verdict(open_pending(request), deny, DIRECTORY, T0)
    assert denied.resolution is not None
    assert denied.resolution.reasons == (APPROVAL_DENIED, "denied by bob: too big")
    assert (denied.state.denied_by, denied.state.deny_reason) == ("bob", "too big")


@pytest.mark.parametrize(
    ("offset", "expires"),
    [(timedelta(minutes=14, seconds=59), False), (timedelta(minutes=15), True), (timedelta(days=3), True)],
)
def test_expire_at_deadline(offset: timedelta, expires: bool) -> None:
    pending = open_pending(make_request())
    out = expire(pending, T0 + offset)
    assert (out is not None) == expires
    if out is not None:
        state, resolution = out
        assert state.status is ApprovalStatus.EXPIRED
        assert (resolution.decision, resolution.reasons) == (DecisionKind.BLOCK, (APPROVAL_EXPIRED,))


def test_expire_ignores_decided_approvals() -> None:
    request = make_request()
    approved = apply_verdict(open_pending(request), make_verdict(request), DIRECTORY, T0).state
    assert expire(approved, T0 + timedelta(days=1)) is None


def test_open_pending_rejects_inconsistent_requests() -> None:
    request = make_request()
    with pytest.raises(ApprovalError, match="intent_digest"):
        open_pending(request.model_copy(update={"intent_digest": OTHER_DIGEST}))
    with pytest.raises(ApprovalError, match="request id"):
        open_pending(request.model_copy(update={"request_id": uuid.uuid4()}))


def test_new_request_rejects_non_positive_timeout() -> None:
    with pytest.raises(ApprovalError, match="timeout"):
        make_request(timeout=timedelta(0))


def test_state_round_trips_through_bytes() -> None:
    request = make_request(quorum=2)
    state = apply_verdict(open_pending(request), make_verdict(request), DIRECTORY, T0).state
    data = state.to_bytes()
    assert PendingApproval.from_bytes(data) == state
    assert b'"status"' not in open_pending(request).to_bytes(), "defaults are omitted"
    with pytest.raises(ApprovalError, match="corrupt"):
        PendingApproval.from_bytes(b'{"v": 1}')


def test_decisions_for_the_agent() -> None:
    request = make_request()
    pending_d = pending_decision(request, T0)
    assert (pending_d.final, pending_d.decision, pending_d.approval_deadline_at) == (
        False,
        DecisionKind.REQUIRE_APPROVAL,
        request.deadline_at,
    )
    result = apply_verdict(open_pending(request), make_verdict(request), DIRECTORY, T0)
    assert result.resolution is not None
    final = final_decision(result.state, result.resolution, T0 + timedelta(minutes=1))
    assert (final.final, final.decision, final.approved_by) == (True, DecisionKind.ALLOW, ("alice",))
    assert final.agent_id == "refund-bot-1"
    assert final.reasons[0] == APPROVAL_GRANTED


def test_audit_records() -> None:
    request = make_request()
    assert requested_audit(request).event_type is AuditEventType.APPROVAL_REQUESTED
    verdict = make_verdict(request, "zoe")
    result = apply_verdict(open_pending(request), verdict, DIRECTORY, T0)
    record = verdict_audit(result, verdict, T0)
    assert record.event_type is AuditEventType.VERDICT_REJECTED
    assert record.note is not None and record.note.startswith("not_in_group:")
    assert record.event_id == verdict_audit(result, verdict, T0).event_id, "deterministic for dedup"
    ok = make_verdict(request, "alice")
    accepted = verdict_audit(apply_verdict(open_pending(request), ok, DIRECTORY, T0), ok, T0)
    assert accepted.event_type is AuditEventType.VERDICT_ACCEPTED
    assert accepted.event_id != record.event_id


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[]", "'groups'"),
        ("groups: {g: alice}", "list of non-empty"),
        ("groups: {g: ['']}", "list of non-empty"),
        ("groups: {g: [alice", "cannot read"),
    ],
)
def test_directory_file_errors(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "reviewers.yaml"
    path.write_text(text)
    with pytest.raises(ApprovalError, match=error):
        ReviewerDirectory.load(path)


def test_directory_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "reviewers.yaml"
    path.write_text("groups:\n  payments-reviewers: [Alice, bob]\n")
    directory = ReviewerDirectory.load(path)
    assert directory.is_member("payments-reviewers", "alice")
    assert not directory.is_member("reviewers", "alice")
    with pytest.raises(ApprovalError, match="cannot read"):
        ReviewerDirectory.load(tmp_path / "missing.yaml")
