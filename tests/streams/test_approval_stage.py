"""Approvals through every stage without Kafka: open, verdicts, quorum, expiry, counting, redelivery."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas import ApprovalVerdict, AuditEventType, AuditRecord, Decision, DecisionKind, VerdictKind
from schemas.decision import APPROVAL_DENIED, APPROVAL_EXPIRED, APPROVAL_GRANTED, REQUEST_ID_REUSED
from streams.engine import compile_policy
from streams.messages import Open
from streams.stages.approval import EXPIRY_GRACE_MS, OUTBOX_PREFIX, UNKNOWN_REQUEST, ApprovalStage, Reviewers
from streams.stages.approval_machine import ApprovalError, ReviewerDirectory
from streams.stages.outputs import Route
from tests.streams.harness import make_intent
from tests.streams.test_stages import Pump, window_count

ALLOW, APPROVAL, BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK
EVENT_T0 = datetime(2030, 1, 1, tzinfo=UTC)  # the intents' event time
WALL_T0 = datetime(2031, 6, 1, 9, tzinfo=UTC)  # the workers' clock: intents are stamped in the past
POLICY = compile_policy("""
policy: approvals-unit
rules:
  - {id: small, match: {tool: payments.refund}, when: {field: params.amount, op: lte, value: 100},
     decision: ALLOW}
  - id: review
    match: {tool: payments.refund}
    when: {field: params.amount, op: gt, value: 100}
    decision: REQUIRE_APPROVAL
    approval: {group: payments-reviewers, timeout: 10m, channel: "#payments"}
  - id: wire
    match: {tool: bank.wire}
    decision: REQUIRE_APPROVAL
    approval: {group: payments-reviewers, quorum: 2, timeout: 5m}
  - {id: export, match: {tool: data.export}, decision: REQUIRE_APPROVAL}
limits:
  - {id: per-agent, match: {tool: payments.refund}, key: agent, window: 1h, count: 2, decision: BLOCK}
  - {id: exports, match: {tool: data.export}, key: fleet, window: 1h, count: 1, decision: BLOCK}
""", "approvals-unit.yaml")
DIRECTORY = ReviewerDirectory.from_mapping({"groups": {
    "payments-reviewers": ["alice", "bob", "carol"], "reviewers": ["zoe"], "team-a": ["dave"],
}, "bots": {"slack-bot": ["alice"]}})


def pump() -> Pump:
    result = Pump(POLICY, DIRECTORY)
    result.now_ms = ms(WALL_T0)
    return result


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def raw(agent: str = "a1", tool: str = "payments.refund", amount: float = 500, seconds: int = 0,
        **extra: Any) -> bytes:
    intent = make_intent(agent, tool=tool, params={"amount": amount}, agent_owner="team-a",
                         occurred_at=EVENT_T0 + timedelta(seconds=seconds), **extra)
    return intent.model_dump_json().encode()


def verdict(p: Pump, decision: Decision, reviewer: str = "alice", kind: VerdictKind = VerdictKind.APPROVE,
            **extra: Any) -> ApprovalVerdict:
    request = next(r for r in p.requests if r.request_id == decision.request_id)
    fields: dict[str, Any] = {"request_id": request.request_id, "intent_digest": request.intent_digest,
                              "reviewer": reviewer, "verdict": kind, "decided_at": WALL_T0}
    return ApprovalVerdict(**(fields | extra))


def finals(p: Pump, decision: Decision) -> list[Decision]:
    return [d for d in p.decisions if d.request_id == decision.request_id and d.final]


def notes(p: Pump, kind: AuditEventType) -> list[str]:
    return [r.note or "" for r in p.audit if r.event_type is kind]


def test_pending_at_once_then_request_then_approval_counts() -> None:
    p = pump()
    pending = p.decide(raw(amount=500))
    assert (pending.decision, pending.final) == (APPROVAL, False)
    assert pending.approval_deadline_at == WALL_T0 + timedelta(minutes=10)  # wall clock, not event time
    [request] = p.requests
    assert (request.approver_group, request.quorum, request.channel) == ("payments-reviewers", 1, "#payments")
    assert request.deadline_at == pending.approval_deadline_at and request.created_at == WALL_T0
    assert [r.event_id for r in p.audit if r.event_type is AuditEventType.APPROVAL_REQUESTED] == [
        f"{request.request_id}:approval_requested"]
    assert window_count(p.agent_table, "per-agent|agent=a1") == 0  # pending consumes nothing

    p.now_ms += 60_000
    p.verdict(verdict(p, pending))
    [final] = finals(p, pending)
    assert (final.decision, final.approved_by) == (ALLOW, ("alice",))
    assert final.reasons[:2] == (APPROVAL_GRANTED, "approved by alice")
    assert (final.policy_name, final.policy_version) == ("approvals-unit", pending.policy_version)
    assert final.approval_deadline_at == pending.approval_deadline_at
    assert notes(p, AuditEventType.VERDICT_ACCEPTED) == ["approved"]
    assert f"{final.request_id}:decision:final" in {r.event_id for r in p.audit}
    assert window_count(p.agent_table, "per-agent|agent=a1") == 1  # counted when approved
    assert p.decide(raw(amount=10, seconds=1)).decision is ALLOW
    assert p.decide(raw(amount=10, seconds=2)).decision is BLOCK  # the approved one took a slot


def test_a_receipt_written_when_an_approval_resolves_binds_the_request_to_its_action() -> None:
    """The request's receipt evicted while its approval was pending: the resolution writes it again,
    bound to the parked intent's action, so another action under the id is refused, not approved."""
    p = pump()
    rid = uuid.uuid4()
    pending = p.decide(raw(amount=500, request_id=rid))
    del p.agent_table[f"d|{rid}"]  # as the retention does to a receipt older than it
    p.verdict(verdict(p, pending))
    [final] = finals(p, pending)
    assert final.decision is ALLOW
    assert p.decide(raw(amount=500, seconds=60, request_id=rid)) == final  # the same action, sent again
    assert p.decide(raw(amount=900, request_id=rid)).determining == (REQUEST_ID_REUSED,)


def test_redelivered_verdict_and_intent_replay_without_counting_twice() -> None:
    p = pump()
    intent = raw()
    pending = p.decide(intent)
    approve = verdict(p, pending)
    p.verdict(approve)
    p.verdict(approve)  # redelivered after a crash
    first, second = finals(p, pending)
    assert first == second
    assert window_count(p.agent_table, "per-agent|agent=a1") == 1
    assert p.decide(intent) == first  # a redelivered intent now gets the final decision
    assert not notes(p, AuditEventType.VERDICT_REJECTED)


def test_duplicate_open_republishes_without_resetting_the_quorum() -> None:
    p = pump()
    pending = p.decide(raw(tool="bank.wire"))
    p.verdict(verdict(p, pending, "alice"))
    [request] = p.requests
    p.run(p.approvals.handle_open(Open(request=request), 0))
    assert len(p.requests) == 2 and p.requests[1] == request
    entry = p.approvals.entry(request.request_id)
    assert entry is not None and entry.state.approved_by == ("alice",)


def test_quorum_of_two_needs_two_distinct_reviewers() -> None:
    p = pump()
    pending = p.decide(raw(tool="bank.wire"))
    assert p.requests[0].quorum == 2
    p.verdict(verdict(p, pending, "alice"))
    p.verdict(verdict(p, pending, "ALICE", decided_at=WALL_T0 + timedelta(seconds=1)))
    assert not finals(p, pending)
    assert notes(p, AuditEventType.VERDICT_ACCEPTED) == ["approval 1 of 2"]
    assert notes(p, AuditEventType.VERDICT_REJECTED) == ["duplicate_reviewer: ALICE already approved"]
    p.verdict(verdict(p, pending, "bob"))
    [final] = finals(p, pending)
    assert (final.decision, final.approved_by) == (ALLOW, ("alice", "bob"))


def test_deny_blocks_with_the_reason_and_consumes_nothing() -> None:
    p = pump()
    pending = p.decide(raw())
    p.verdict(verdict(p, pending, "bob", VerdictKind.DENY, reason="looks like fraud"))
    [final] = finals(p, pending)
    assert final.decision is BLOCK
    assert final.reasons[:2] == (APPROVAL_DENIED, "denied by bob: looks like fraud")
    assert window_count(p.agent_table, "per-agent|agent=a1") == 0
    assert [d.decision for d in (p.decide(raw(amount=1, seconds=1)), p.decide(raw(amount=1, seconds=2)))] == [
        ALLOW, ALLOW]


def test_rejected_verdicts_are_audited_with_why() -> None:
    p = pump()
    pending = p.decide(raw())
    stranger = verdict(p, pending, "mallory")
    owner = verdict(p, pending, "dave")  # in team-a, the agent's owner
    replayed = verdict(p, pending, intent_digest="0" * 64)
    unknown = stranger.model_copy(update={"request_id": uuid.uuid4()})
    for item in (stranger, owner, replayed, unknown):
        p.verdict(item)
    assert not finals(p, pending)
    reasons = [note.split(":")[0] for note in notes(p, AuditEventType.VERDICT_REJECTED)]
    assert reasons == ["not_in_group", "self_approval", "digest_mismatch", UNKNOWN_REQUEST]
    unknown_audit = [r for r in p.audit if r.request_id == unknown.request_id]
    assert unknown_audit[0].verdict == unknown


def test_the_tick_expires_after_the_grace_and_later_verdicts_are_rejected() -> None:
    p = pump()
    pending = p.decide(raw())
    deadline = ms(WALL_T0 + timedelta(minutes=10))
    p.now_ms = deadline + EXPIRY_GRACE_MS - 1  # a verdict recorded before the deadline may still come
    p.tick()
    assert not finals(p, pending)
    p.now_ms += 1
    p.tick()
    p.tick()  # expired once: a second tick sends nothing
    [first] = finals(p, pending)
    assert (first.decision, first.reasons[0]) == (BLOCK, APPROVAL_EXPIRED)
    p.verdict(verdict(p, pending))
    assert notes(p, AuditEventType.VERDICT_REJECTED) == ["not_pending: approval is already expired"]
    assert len(finals(p, pending)) == 1 and window_count(p.agent_table, "per-agent|agent=a1") == 0
    # Closed approvals are forgotten after the retention, by the tick.
    p.now_ms += p.approvals.retention_ms + 1
    p.tick()
    assert p.approvals.entry(pending.request_id) is None and not p.approval_table


def test_a_late_verdict_expires_a_pending_approval() -> None:
    p = pump()
    pending = p.decide(raw())
    p.now_ms = ms(WALL_T0 + timedelta(minutes=11))
    p.verdict(verdict(p, pending))
    [final] = finals(p, pending)
    assert (final.decision, final.reasons[0]) == (BLOCK, APPROVAL_EXPIRED)
    assert notes(p, AuditEventType.VERDICT_REJECTED) == ["expired: verdict arrived after the deadline"]


def test_an_approved_action_counts_on_its_shared_limit() -> None:
    p = pump()
    pending = p.decide(raw("a1", tool="data.export"))
    assert (pending.decision, pending.final) == (APPROVAL, False)
    assert Route.SHARED in p.routes  # decided after the fleet limit's hop
    assert window_count(p.shared_table, "exports|fleet") == 0
    assert p.requests[0].approver_group == "reviewers"  # no approval block: the defaults
    p.verdict(verdict(p, pending, "zoe"))
    assert finals(p, pending)[0].decision is ALLOW
    assert window_count(p.shared_table, "exports|fleet") == 1
    # Redelivered Resolved: the counts are sent again and counted once.
    resolved = [s for s in p.sent if s.route is Route.FEEDBACK and b'"resolved"' in s.value[:24]]
    p.run(resolved)
    assert window_count(p.shared_table, "exports|fleet") == 1
    other = p.decide(raw("a2", tool="data.export", seconds=5))
    assert (other.decision, other.rules[-1]) == (BLOCK, "exports")


def test_an_approved_intent_sent_again_gets_its_allow_only_through_the_fleet_count() -> None:
    """The final ALLOW of an approval with shared limits is the last hop's to send, after the fleet
    windows counted it: a redelivery (or resend) of the intent sends the Count again, so it is never
    answered ALLOW before the count lands (the shared partition may lag behind)."""
    p = pump()
    intent = raw("a1", tool="data.export")
    pending = p.decide(intent)
    p.verdict(verdict(p, pending, "zoe"))
    [final] = finals(p, pending)
    again = p.agent.handle_intent(intent, b"a1", POLICY, 0, p.now_ms)
    assert again.decision is None and [s.route for s in again.sends] == [Route.SHARED]
    p.run(again)
    assert finals(p, pending) == [final, final]
    assert window_count(p.shared_table, "exports|fleet") == 1


def test_nobody_approves_without_a_directory() -> None:
    p = Pump(POLICY)
    p.now_ms = ms(WALL_T0)
    pending = p.decide(raw())
    p.verdict(verdict(p, pending))
    assert not finals(p, pending)
    assert notes(p, AuditEventType.VERDICT_REJECTED)[0].startswith("not_in_group")


def test_an_invalid_verdict_goes_to_the_dead_letter() -> None:
    p = pump()
    sends = p.approvals.handle_verdict(b'{"request_id": "nope"}', b"k", 0, p.now_ms)
    assert [s.route for s in sends] == [Route.DEAD_LETTER]
    assert dict(sends[0].headers)["error"].startswith(b"invalid_verdict")


def test_reviewers_file_is_required_valid_at_start_and_reloaded_when_it_changes(tmp_path: Path) -> None:
    with pytest.raises(ApprovalError, match="cannot read"):
        Reviewers(tmp_path / "missing.yaml")
    path = tmp_path / "reviewers.yaml"
    path.write_text("groups: {payments-reviewers: [alice]}\n")
    reviewers = Reviewers(path)
    assert reviewers.current.is_member("payments-reviewers", "alice")
    path.write_text("groups: [not, a, mapping]\n")
    reviewers.refresh()  # a bad edit keeps the last good directory
    assert reviewers.current.is_member("payments-reviewers", "alice")
    path.write_text("groups: {payments-reviewers: [bob, carol]}\n")
    reviewers.refresh()
    assert reviewers.current.members("payments-reviewers") == {"bob", "carol"}
    assert Reviewers(None).current.members("reviewers") == frozenset()


def test_an_approved_allow_goes_out_only_after_every_limit_counted_it() -> None:
    """The agent hears of the approval only once its limits hold the action: a new intent it sends on
    hearing it can never slip under a limit the approved action fills."""
    p = pump()
    pending = p.decide(raw("a1", tool="data.export"))
    p.sent.clear()
    p.verdict(verdict(p, pending, "zoe"))
    order = [(s.route, s.value[:24]) for s in p.sent]
    count_at = next(i for i, (route, head) in enumerate(order)
                    if route is Route.SHARED and b'"count"' in head)
    final_at = next(i for i, (route, _) in enumerate(order) if route is Route.DECISIONS)
    assert count_at < final_at
    assert [s.route for s in p.sent].count(Route.DECISIONS) == 1


def test_a_denied_approval_is_answered_by_the_approval_stage_and_counts_nothing() -> None:
    p = pump()
    pending = p.decide(raw("a1", tool="data.export"))
    p.sent.clear()
    p.verdict(verdict(p, pending, "zoe", kind=VerdictKind.DENY, reason="no"))
    assert [f.decision for f in finals(p, pending)] == [BLOCK]
    assert not any(s.route is Route.SHARED for s in p.sent)
    assert window_count(p.shared_table, "exports|fleet") == 0


def test_each_final_of_an_approval_is_reported_once_to_the_metrics_hooks() -> None:
    p = pump()
    approved: list[Decision] = []
    refused: list[Decision] = []
    p.agent.on_approved, p.approvals.on_refused = approved.append, refused.append
    granted, denied, expired = p.decide(raw(seconds=0)), p.decide(raw(seconds=1)), p.decide(raw(seconds=2))
    approve = verdict(p, granted)
    p.verdict(approve)
    p.verdict(approve)  # redelivered
    deny = verdict(p, denied, kind=VerdictKind.DENY, reason="not this one")
    p.verdict(deny)
    p.verdict(deny)
    p.now_ms = ms(WALL_T0 + timedelta(minutes=10)) + EXPIRY_GRACE_MS
    p.tick()
    p.tick()
    assert [(d.request_id, d.decision) for d in approved] == [(granted.request_id, ALLOW)]
    assert [(d.request_id, d.decision, d.reasons[0]) for d in refused] == [
        (denied.request_id, BLOCK, APPROVAL_DENIED), (expired.request_id, BLOCK, APPROVAL_EXPIRED)]


def test_a_partition_taken_over_is_indexed_and_unflushed_expiries_are_sent_again() -> None:
    p = pump()
    first = p.decide(raw(seconds=0))
    p.now_ms += 60_000
    second = p.decide(raw(seconds=1))
    deadline = ms(WALL_T0 + timedelta(minutes=10))
    # The worker expires the first one and stops before the producer flushed its outputs.
    p.now_ms = deadline + EXPIRY_GRACE_MS
    p.run(p.approvals.expire_due(0, p.now_ms))
    assert f"{OUTBOX_PREFIX}{first.request_id}" in p.approval_table
    # Another worker takes the partition over: the same table, a new stage with an empty index.
    taker = ApprovalStage(p.approval_table, Reviewers(None))
    resent = taker.took_over(0)
    [final] = [Decision.model_validate_json(s.value) for s in resent if s.route is Route.DECISIONS]
    assert (final.request_id, final.reasons[0]) == (first.request_id, APPROVAL_EXPIRED)
    taker.flushed(0)
    assert not any(key.startswith(OUTBOX_PREFIX) for key in p.approval_table)
    assert taker.took_over(0) == []  # nothing left to re-send
    # Its index came from the table: the second one expires on the taker's tick; nothing is due early.
    assert taker.expire_due(0, p.now_ms + 59_999) == []
    expired = [Decision.model_validate_json(s.value) for s in taker.expire_due(0, p.now_ms + 60_000)
               if s.route is Route.DECISIONS]
    assert [d.request_id for d in expired] == [second.request_id]
    taker.gave_up(0)
    assert taker.expire_due(0, p.now_ms + 10 * p.approvals.retention_ms) == []


def test_an_open_for_an_id_already_open_for_another_agent_is_refused_not_merged() -> None:
    p = pump()
    pending = p.decide(raw("a1"))
    [request] = [r for r in p.requests if r.request_id == pending.request_id]
    intruder = request.model_copy(update={
        "intent": request.intent.model_copy(update={"agent_id": "a9"})})
    sends = p.approvals.handle_open(Open(request=intruder), 0)
    assert [s.route for s in sends] == [Route.AUDIT]
    assert AuditRecord.model_validate_json(sends[0].value).event_type is AuditEventType.SECURITY
    entry = p.approvals.entry(pending.request_id)
    assert entry is not None and entry.state.request.intent.agent_id == "a1"


def test_a_bot_signs_only_for_the_reviewers_listed_under_it_and_only_from_slack() -> None:
    p = pump()
    pending = p.decide(raw())

    def send(item: ApprovalVerdict, signer: tuple[str, str]) -> None:
        key = str(item.request_id).encode()
        p.run(p.approvals.handle_verdict(item.model_dump_json().encode(), key, 0, p.now_ms, signer))

    send(verdict(p, pending, "bob", source="slack"), ("bot", "slack-bot"))  # bob is not the bot's
    send(verdict(p, pending, "alice", source="cli"), ("bot", "slack-bot"))  # not from Slack
    send(verdict(p, pending, "alice", source="slack"), ("bot", "other-bot"))  # another bot
    assert [n.split(":")[0] for n in notes(p, AuditEventType.VERDICT_REJECTED)] == ["unauthenticated"] * 3
    assert not finals(p, pending)
    send(verdict(p, pending, "alice", source="slack"), ("bot", "slack-bot"))
    [final] = finals(p, pending)
    assert (final.decision, final.approved_by) == (ALLOW, ("alice",))
