"""The deciding stages without Kafka: dict tables, and a pump that delivers their messages."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import ApprovalRequest, ApprovalVerdict, AuditRecord, Decision, DecisionKind
from schemas.decision import REQUEST_ID_REUSED
from streams.engine import CompiledPolicy, compile_policy
from streams.messages import (
    Count,
    Feedback,
    Forward,
    Open,
    Receipt,
    Release,
    Reservation,
    Resolved,
    kind_of,
)
from streams.stages.approval import ApprovalStage, Reviewers
from streams.stages.approval_machine import ReviewerDirectory
from streams.stages.decide import FINGERPRINT_PREFIX, DecideStage
from streams.stages.outputs import Outcome, Route, Send
from streams.stages.shared import SharedStage
from streams.state.table_state import TableState
from tests.streams.harness import make_intent

ALLOW, APPROVAL, BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK
T0 = datetime(2030, 1, 1, tzinfo=UTC)
POLICY = compile_policy("""
policy: stages
rules:
  - {id: refunds, match: {tool: payments.refund}, decision: ALLOW}
  - {id: lookups, match: {tool: crm.get_account}, decision: ALLOW}
limits:
  - {id: budget, match: {tool: payments.refund}, key: fleet, window: 1h, sum: params.amount, max: 100,
     decision: REQUIRE_APPROVAL}
  - {id: per-tool, match: {tool: payments.refund}, key: tool, window: 1h, count: 3, decision: BLOCK}
  - {id: per-agent, match: {tool: payments.refund}, key: agent, window: 1h, count: 2, decision: BLOCK}
""", "stages.yaml")


class Pump:
    """Every stage over dict tables; delivers forwards, releases, feedback, counts and the approval
    stage's messages until quiet. ``now_ms`` is the workers' wall clock and the records' timestamps."""

    def __init__(self, policy: CompiledPolicy = POLICY, reviewers: ReviewerDirectory | None = None) -> None:
        self.policy = policy
        self.now_ms = 0
        self.agent_table: dict[str, bytes] = {}
        self.shared_table: dict[str, bytes] = {}
        self.approval_table: dict[str, bytes] = {}
        self.agent = DecideStage(self.agent_table)
        self.shared = SharedStage(self.shared_table)
        self.approvals = ApprovalStage(self.approval_table, Reviewers(None))
        self.approvals.reviewers.current = reviewers or ReviewerDirectory()
        self.decisions: list[Decision] = []
        self.requests: list[ApprovalRequest] = []
        self.audit: list[AuditRecord] = []
        self.routes: list[Route] = []
        self.sent: list[Send] = []

    def run(self, sends: Outcome | list[Send]) -> None:
        queue = list(sends.sends if isinstance(sends, Outcome) else sends)
        while queue:
            send = queue.pop(0)
            self.routes.append(send.route)
            self.sent.append(send)
            queue += self._deliver(send)

    def _deliver(self, send: Send) -> list[Send]:
        kind, now = kind_of(send.value), self.now_ms
        if send.route is Route.DECISIONS:
            self.decisions.append(Decision.model_validate_json(send.value))
        elif send.route is Route.AUDIT:
            self.audit.append(AuditRecord.model_validate_json(send.value))
        elif send.route is Route.APPROVAL_REQUESTS:
            self.requests.append(ApprovalRequest.model_validate_json(send.value))
        elif send.route is Route.SHARED and kind == "release":
            self.shared.handle_release(Release.model_validate_json(send.value), 0, now)
        elif send.route is Route.SHARED and kind == "count":
            return self.shared.handle_count(Count.model_validate_json(send.value), 0, now)
        elif send.route is Route.SHARED:
            forward = Forward.model_validate_json(send.value)
            return self.shared.handle_forward(forward, self.policy, 0, now).sends
        elif send.route is Route.FEEDBACK and kind == "resolved":
            return self.agent.handle_resolved(Resolved.model_validate_json(send.value), 0, now)
        elif send.route is Route.FEEDBACK:
            return self.agent.handle_feedback(Feedback.model_validate_json(send.value), 0, now)
        elif send.route is Route.APPROVAL_CONTROL:
            return self.approvals.handle_open(Open.model_validate_json(send.value), 0)
        return []

    def decide(self, raw: bytes, key: bytes = b"a1") -> Decision:
        before = len(self.decisions)
        self.run(self.agent.handle_intent(raw, key, self.policy, 0, self.now_ms))
        assert len(self.decisions) == before + 1
        return self.decisions[-1]

    def verdict(self, verdict: ApprovalVerdict) -> None:
        """Deliver a verdict recorded at ``now_ms``."""
        key = str(verdict.request_id).encode()
        self.run(self.approvals.handle_verdict(verdict.model_dump_json().encode(), key, 0, self.now_ms))

    def tick(self) -> None:
        """One round of the expiry tick at ``now_ms``, its outputs flushed."""
        self.run(self.approvals.expire_due(0, self.now_ms))
        self.approvals.flushed(0)


def refund(agent: str = "a1", amount: float = 10, seconds: int = 0, **extra: Any) -> bytes:
    at = T0 + timedelta(seconds=seconds)
    intent = make_intent(agent, params={"amount": amount}, occurred_at=at, **extra)
    return intent.model_dump_json().encode()


def window_count(table: dict[str, bytes], key: str) -> int:
    state = TableState(table).get_window(key)
    return 0 if state is None else len(state.times_ms)


def test_shared_limits_travel_through_every_key_and_count_once() -> None:
    pump = Pump()
    decision = pump.decide(refund(amount=10))
    assert decision.decision is ALLOW and decision.final
    assert pump.routes.count(Route.SHARED) == 2  # two shared keys: fleet budget, then per-tool
    assert window_count(pump.shared_table, "budget|fleet") == 1
    assert window_count(pump.shared_table, "per-tool|tool=payments.refund") == 1
    assert window_count(pump.agent_table, "per-agent|agent=a1") == 1
    assert TableState(pump.agent_table).get_history("a1|payments.refund") is None  # no risk model


def test_a_refusal_downstream_releases_every_reservation() -> None:
    pump = Pump()
    assert pump.decide(refund(agent="a1", amount=60)).decision is ALLOW
    over = pump.decide(refund(agent="a2", amount=60, seconds=1))  # 120 > 100: needs approval
    assert (over.decision, over.final, over.rules) == (APPROVAL, False, ("refunds", "budget"))
    # The pending refund consumed nothing, on either stage.
    assert window_count(pump.shared_table, "budget|fleet") == 1
    assert window_count(pump.shared_table, "per-tool|tool=payments.refund") == 1
    assert window_count(pump.agent_table, "per-agent|agent=a2") == 0
    assert f"p|{over.request_id}" in pump.agent_table  # parked for the approvals workflow


def test_agent_limit_blocks_without_leaving_the_agent_partition() -> None:
    pump = Pump()
    for second in range(2):
        assert pump.decide(refund(seconds=second)).decision is ALLOW
    pump.routes.clear()
    third = pump.decide(refund(seconds=2))
    assert third.decision is BLOCK and third.rules[-1] == "per-agent"
    assert Route.SHARED not in pump.routes


def test_redelivered_intent_gets_the_recorded_decision() -> None:
    pump = Pump()
    raw = refund()
    first = pump.decide(raw)
    again = pump.decide(raw)
    assert first == again
    assert window_count(pump.shared_table, "budget|fleet") == 1
    assert window_count(pump.agent_table, "per-agent|agent=a1") == 1


def test_the_same_request_sent_again_later_gets_its_recorded_decision_and_counts_nothing() -> None:
    """A request id is bound to its agent and action, not to its record's bytes: the agent sending it
    again (another time stamp and wait) is answered from the receipt."""
    pump = Pump()
    rid = uuid.uuid4()
    first = pump.decide(refund(request_id=rid))
    again = pump.decide(refund(seconds=30, request_id=rid, wait_until=T0 + timedelta(minutes=5)))
    assert (first.decision, again) == (ALLOW, first)
    assert window_count(pump.shared_table, "budget|fleet") == 1
    assert window_count(pump.agent_table, "per-agent|agent=a1") == 1


def test_a_request_id_reused_for_another_action_or_identity_is_refused() -> None:
    pump = Pump()
    rid = uuid.uuid4()
    assert pump.decide(refund(amount=10, request_id=rid)).decision is ALLOW
    for other in (refund(amount=11, request_id=rid), refund(request_id=rid, environment="staging")):
        refused = pump.decide(other)
        assert (refused.decision, refused.determining) == (BLOCK, (REQUEST_ID_REUSED,))
    assert window_count(pump.agent_table, "per-agent|agent=a1") == 1


def test_a_receipt_from_an_earlier_release_still_recognises_its_redelivery() -> None:
    """Receipts written before requests were bound to their action hold a hash of the record's bytes:
    the same bytes redelivered across an upgrade replay; other bytes under the id are refused."""
    pump = Pump()
    rid = uuid.uuid4()
    raw = refund(request_id=rid)
    first = pump.decide(raw)
    key = f"d|{rid}"
    legacy = Receipt.model_validate_json(pump.agent_table[key])
    assert legacy.fingerprint.startswith(FINGERPRINT_PREFIX)
    legacy = legacy.model_copy(update={"fingerprint": hashlib.blake2b(raw, digest_size=16).hexdigest()})
    pump.agent_table[key] = legacy.model_dump_json().encode()
    assert pump.decide(raw) == first
    assert pump.decide(refund(seconds=30, request_id=rid)).determining == (REQUEST_ID_REUSED,)


def test_redelivered_forward_replays_its_hop() -> None:
    pump = Pump()
    outcome = pump.agent.handle_intent(refund(), b"a1", POLICY, 0, 0)
    forward = Forward.model_validate_json(outcome.sends[0].value)
    first = pump.shared.handle_forward(forward, POLICY, 0, 0)
    second = pump.shared.handle_forward(forward, POLICY, 0, 0)
    assert second.duplicate and [s.value for s in first.sends] == [s.value for s in second.sends]
    assert window_count(pump.shared_table, "budget|fleet") == 1


def test_release_is_applied_once_and_only_to_what_its_request_reserved() -> None:
    pump = Pump()
    first = pump.decide(refund(amount=5))
    pump.decide(refund(agent="a2", amount=5))
    at_ms = int(T0.timestamp() * 1000)
    reservation = Reservation(key="budget|fleet", at_ms=at_ms, value=5)
    forged = Release(request_id=uuid.uuid4(), reservation=reservation)  # reserved nothing here
    pump.shared.handle_release(forged, 0, 0)
    assert window_count(pump.shared_table, "budget|fleet") == 2
    assert pump.shared.handle_release(Release(request_id=first.request_id, reservation=reservation,
                                              agent_id="a2"), 0, 0) is None  # not a2's request
    assert window_count(pump.shared_table, "budget|fleet") == 2
    release = Release(request_id=first.request_id, reservation=reservation, agent_id="a1")
    pump.shared.handle_release(release, 0, 0)
    pump.shared.handle_release(release, 0, 0)
    assert window_count(pump.shared_table, "budget|fleet") == 1
    other = Reservation(key="budget|fleet", at_ms=at_ms, value=500)  # not what it reserved
    pump.shared.handle_release(Release(request_id=first.request_id, reservation=other, agent_id="a1"), 0, 0)
    assert window_count(pump.shared_table, "budget|fleet") == 1


def test_another_agent_reusing_a_request_id_is_another_request_on_shared_limits() -> None:
    """Agents choose their request ids: one that reuses another's (read from the topics) must neither
    pass as a redelivery of the other's hop (and count nowhere) nor free the other's reservations."""
    pump = Pump()
    shared_id = uuid.uuid4()
    first = pump.decide(refund(amount=5, request_id=shared_id))
    elsewhere = DecideStage({})  # a2's partition, on which the id is new
    pump.run(elsewhere.handle_intent(refund(agent="a2", amount=5, request_id=shared_id), b"a2", POLICY, 0,
                                     pump.now_ms))
    second = pump.decisions[-1]
    assert (first.decision, second.decision, second.agent_id) == (ALLOW, ALLOW, "a2")
    assert window_count(pump.shared_table, "budget|fleet") == 2


def test_invalid_input_and_missing_policy() -> None:
    pump = Pump()
    rid = uuid.uuid4()
    dead = pump.agent.handle_intent(b"{not json", b"k", POLICY, 0, 0)
    assert [s.route for s in dead.sends] == [Route.DEAD_LETTER]
    assert dict(dead.sends[0].headers)["error"].startswith(b"invalid_intent")
    answered = pump.agent.handle_intent(f'{{"request_id": "{rid}"}}'.encode(), b"k", POLICY, 0, 0)
    assert answered.decision is not None and answered.decision.request_id == rid
    assert answered.decision.decision is BLOCK and answered.decision.agent_id == "k"
    no_policy = pump.agent.handle_intent(refund(), b"a1", None, 0, 0)
    assert no_policy.decision is not None and no_policy.decision.reasons[0].startswith("no_policy")


def test_records_expire_after_the_retention() -> None:
    table: dict[str, bytes] = {}
    stage = DecideStage(table, retention_ms=1000)
    raw = make_intent("a1", tool="crm.get_account", action="read", target="crm:accounts").model_dump_json()
    stage.handle_intent(raw.encode(), b"a1", POLICY, 0, now_ms=0)
    assert any(key.startswith("d|") for key in table)
    stage.handle_intent(b"{}", b"a1", POLICY, 0, now_ms=5000)  # any later event evicts
    assert not any(key.startswith("d|") for key in table)


def test_records_a_stage_did_not_write_expire_once_it_adopts_the_partition() -> None:
    table: dict[str, bytes] = {}
    DecideStage(table, retention_ms=1000).handle_intent(
        make_intent("a1", tool="crm.get_account", action="read", target="crm:accounts")
        .model_dump_json().encode(), b"a1", POLICY, 0, now_ms=0)
    restarted = DecideStage(table, retention_ms=1000)  # e.g. restored from the changelog
    restarted.handle_intent(b"{}", b"a1", POLICY, 0, now_ms=5000)
    assert any(key.startswith("d|") for key in table)  # queued by no one: kept
    restarted.retention.adopt(0, [key for key in table if key.startswith("d|")], now_ms=5000)
    restarted.handle_intent(b"{}", b"a1", POLICY, 0, now_ms=5500)
    assert any(key.startswith("d|") for key in table)  # one retention from the take-over
    restarted.handle_intent(b"{}", b"a1", POLICY, 0, now_ms=6000)
    assert not any(key.startswith("d|") for key in table)
    restarted.retention.forget(0)  # given up: another worker evicts them
    assert 0 not in restarted.retention.queues


def test_a_change_persisted_without_its_record_is_not_counted_twice() -> None:
    pump = Pump()
    raw = refund()
    pump.decide(raw)
    # A crash lost the tail of the changelog: the counts survived, the idempotency records did not.
    for table in (pump.agent_table, pump.shared_table):
        for key in [k for k in table if k.startswith("d|")]:
            del table[key]
    again = pump.decide(raw)
    assert again.decision is ALLOW
    assert window_count(pump.shared_table, "budget|fleet") == 1
    assert window_count(pump.agent_table, "per-agent|agent=a1") == 1


def test_decisions_are_stamped_with_the_workers_clock_not_the_intents_event_time() -> None:
    """A backdated intent (stamped long ago) is still decided, and audited, now."""
    pump = Pump()
    pump.now_ms = int((T0 + timedelta(days=3)).timestamp() * 1000)
    allowed = pump.decide(refund(agent="a1", amount=10))
    pending = pump.decide(refund(agent="a2", amount=150, seconds=1))
    decided_now = T0 + timedelta(days=3)
    assert (allowed.decided_at, pending.decided_at) == (decided_now, decided_now)
    assert not pending.final
    audited = [record.event_time for record in pump.audit if record.decision is not None]
    assert audited[:2] == [decided_now] * 2


def test_an_intent_redelivered_in_flight_gets_the_same_decision_later() -> None:
    """The redelivery re-sends the stored forward; the last hop decides at stage 1's time, so the
    answer (decided_at, and an approval's deadline) is the same bytes however late it comes."""
    pump = Pump()
    for amount in (10, 150):  # an ALLOW, then a REQUIRE_APPROVAL (both travel through the hops)
        raw = refund(agent=f"a{amount}", amount=amount)
        first = pump.agent.handle_intent(raw, b"a1", pump.policy, 0, pump.now_ms)
        again = pump.agent.handle_intent(raw, b"a1", pump.policy, 0, pump.now_ms)  # before any feedback
        pump.run(first)
        pump.now_ms += 60_000  # the replayed forward reaches the hops a minute later
        pump.run(again)
        original, replayed = pump.decisions[-2:]
        assert original == replayed
        assert original.approval_deadline_at == replayed.approval_deadline_at


def test_an_intent_stamped_far_from_the_workers_clock_is_blocked_and_counts_nothing() -> None:
    pump = Pump()
    pump.agent.max_event_skew_ms = 300_000
    pump.now_ms = int(T0.timestamp() * 1000)
    ahead = refund(seconds=301)
    blocked = pump.decide(ahead)
    assert (blocked.decision, blocked.final, blocked.rules) == (BLOCK, True, ())
    assert blocked.reasons == ("event_time_skew: occurred_at is 301 s after the intent reached Kafka "
                               "(at most 300 s)",)
    assert Route.SHARED not in pump.routes and window_count(pump.agent_table, "per-agent|agent=a1") == 0
    pump.now_ms += 60_000
    assert pump.decide(ahead) == blocked  # a redelivery, later, gets the recorded answer
    behind = pump.decide(refund(seconds=-239))  # 299 s behind the clock: within the bound, decided
    assert behind.decision is ALLOW
    late = pump.decide(refund(seconds=-361))
    assert late.reasons[0].startswith("event_time_skew: occurred_at is 421 s before the intent reached")
    # Judged against the record's Kafka timestamp when there is one: a backlog decided late is not skewed.
    stamped = make_intent("a2", params={"amount": 1}, occurred_at=T0 + timedelta(hours=2))
    appended = int(stamped.occurred_at.timestamp() * 1000) + 1_000
    pump.now_ms = appended + 3_600_000  # decided an hour after it arrived
    pump.run(pump.agent.handle_intent(stamped.model_dump_json().encode(), b"a2", POLICY, 0, pump.now_ms,
                                      appended))
    [backlog] = [d for d in pump.decisions if d.request_id == stamped.request_id]
    assert backlog.decision is ALLOW


def test_a_redelivered_intent_gets_its_recorded_decision_on_the_reply_key_it_names() -> None:
    """A process reading reply partitions reads nothing else (docs/replies.md): the replayed answer to a
    redelivered intent must reach the same reply key as the first, or its call times out."""
    pump = Pump()
    raw = make_intent("a1", tool="crm.get_account", action="read", target="crm:accounts",
                      reply_key="r3.0").model_dump_json().encode()
    answers = []
    for _ in range(2):
        pump.run(pump.agent.handle_intent(raw, b"a1", POLICY, 0, pump.now_ms))
        answers.append([s for s in pump.sent if s.route in (Route.DECISIONS, Route.REPLIES)][-1])
    assert [(a.route, a.key) for a in answers] == [(Route.REPLIES, b"r3.0")] * 2
    assert answers[0].value == answers[1].value
