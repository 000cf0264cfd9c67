"""End to end on a real broker with one worker deciding by ``fleet_budget.yaml``.

Each test sets its intents' event time on its own day, so the 24 h fleet budget and the per-agent
10-minute limit of one test never see another test's actions. The SIGKILL test runs last: it
restarts the module's worker.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from schemas import DecisionKind
from schemas.intent import MAX_INTENT_BYTES
from streams.stages.outputs import MAX_DEAD_LETTER_BYTES
from tests.streams.harness import Client, WorkerProcess, make_intent

pytestmark = pytest.mark.integration
ALLOW, APPROVAL, BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK


def day(n: int) -> datetime:
    """Midday of the n-th test day (event time)."""
    return datetime(2030, 1, 1, 12, tzinfo=UTC) + timedelta(days=3 * n)


def agent(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


async def test_each_decision_type_end_to_end(fleet: Client) -> None:
    a, t0 = agent("types"), day(1)
    allow = await fleet.decide(make_intent(a, params={"amount": 10}, occurred_at=t0))
    sent_at = datetime.now(UTC)
    approval = await fleet.decide(make_intent(a, params={"amount": 500}, occurred_at=t0))
    answered_at = datetime.now(UTC)
    block = await fleet.decide(make_intent(a, params={"amount": 5000}, occurred_at=t0))

    assert (allow.decision, allow.final, allow.rules) == (ALLOW, True, ("refund-up-to-100",))
    assert allow.policy_version.startswith("sha256:")
    assert (approval.decision, approval.final) == (APPROVAL, False)
    assert approval.rules == ("refund-over-100-needs-approval",)
    deadline = approval.approval_deadline_at  # the worker's wall clock + the timeout, not event time
    assert deadline is not None
    assert sent_at + timedelta(minutes=15) <= deadline + timedelta(seconds=1)
    assert deadline <= answered_at + timedelta(minutes=15, seconds=1)
    assert (block.decision, block.final, block.rules) == (BLOCK, True, ("refund-over-1000-blocked",))
    ids = {f"{allow.request_id}:decision:final", f"{approval.request_id}:decision:pending",
           f"{block.request_id}:decision:final"}
    await fleet.wait_for(lambda: ids <= {r["event_id"] for r in fleet.audit}, what="audit records")


async def test_agent_limit_across_a_window_boundary(fleet: Client) -> None:
    a, t0 = agent("window"), day(2)
    first = await fleet.decide_all(
        make_intent(a, params={"amount": 1}, occurred_at=t0 + timedelta(seconds=i)) for i in range(20)
    )
    assert [d.decision for d in first] == [ALLOW] * 20
    # 21st inside the 10 minutes: blocked; one exactly 10 minutes after the first: the first is out.
    inside = await fleet.decide(make_intent(a, params={"amount": 1}, occurred_at=t0 + timedelta(minutes=9)))
    assert (inside.decision, inside.rules[-1]) == (BLOCK, "refunds-per-agent-per-10m")
    after = await fleet.decide(make_intent(a, params={"amount": 1}, occurred_at=t0 + timedelta(minutes=10)))
    assert after.decision is ALLOW
    again = await fleet.decide(
        make_intent(a, params={"amount": 1}, occurred_at=t0 + timedelta(minutes=10, milliseconds=500)))
    assert again.decision is BLOCK  # the second one (t0 + 1 s) is still inside


async def test_fleet_budget_spans_agents(fleet: Client) -> None:
    t0 = day(3)
    agents = [agent("fleet") for _ in range(11)]
    intents = [make_intent(a, params={"amount": 100}, occurred_at=t0 + timedelta(seconds=i))
               for i in range(5) for a in agents]
    decisions = await fleet.decide_all(intents)
    kinds = Counter(d.decision for d in decisions)
    assert kinds == {ALLOW: 50, APPROVAL: 5}  # 50 x 100 = the 5,000 budget, whatever the order
    over = [d for d in decisions if d.decision is APPROVAL]
    assert all(d.rules[-1] == "fleet-refunds-5000-per-24h" and not d.final for d in over)
    # Pending approvals consume nothing: a small refund still fits once the day has moved on.
    later = await fleet.decide(
        make_intent(agents[0], params={"amount": 100}, occurred_at=t0 + timedelta(days=1)))
    assert later.decision is ALLOW


async def test_duplicate_intent_gets_the_same_decision_and_consumes_once(fleet: Client) -> None:
    a, t0 = agent("dup"), day(4)
    intents = [make_intent(a, params={"amount": 1}, occurred_at=t0 + timedelta(seconds=i)) for i in range(20)]
    for intent in intents:
        await fleet.send(intent)
        await fleet.send(intent)  # redelivered / retried
    await fleet.wait_for(lambda: all(len(fleet.decisions[i.request_id]) == 2 for i in intents),
                         what="both answers")
    for intent in intents:
        first, second = fleet.decisions[intent.request_id]
        assert first == second and first.decision is ALLOW
    nxt = await fleet.decide(make_intent(a, params={"amount": 1}, occurred_at=t0 + timedelta(seconds=30)))
    assert nxt.decision is BLOCK  # the 21st counted action: 20 were counted once each


async def test_an_intent_the_agent_stopped_waiting_for_is_blocked_and_counts_nothing(fleet: Client) -> None:
    a, t0 = agent("late"), day(5)
    gone = datetime.now(UTC) - timedelta(seconds=1)
    late = await fleet.decide(make_intent(a, params={"amount": 1}, occurred_at=t0, wait_until=gone))
    assert (late.decision, late.final, late.determining) == (BLOCK, True, ("wait_expired",))
    waiting = datetime.now(UTC) + timedelta(minutes=5)
    counted = await fleet.decide_all(make_intent(a, params={"amount": 1}, wait_until=waiting,
                                                 occurred_at=t0 + timedelta(seconds=i)) for i in range(20))
    assert [d.decision for d in counted] == [ALLOW] * 20  # the late one took no place in the limit


async def test_invalid_intents_never_crash_the_worker(fleet: Client, fleet_worker: WorkerProcess) -> None:
    rid = uuid.uuid4()
    await fleet.send_raw(b"bad-agent", f'{{"request_id": "{rid}", "agent_id": "bad-agent"}}'.encode())
    await fleet.send_raw(b"junk", b"\xff not json")
    await fleet.wait_for(lambda: rid in fleet.decisions, what="invalid_intent decision")
    decision = fleet.decisions[rid][0]
    assert decision.decision is BLOCK and decision.reasons[0].startswith("invalid_intent: ")
    await fleet.wait_for(lambda: any(v == b"\xff not json" for v, _ in fleet.dead_letters),
                         what="dead letter")
    headers = next(h for v, h in fleet.dead_letters if v == b"\xff not json")
    assert headers["error"].startswith(b"invalid_intent")
    # Too large to decide, or even to park whole: a BLOCK for the one with a request id, a cut copy of
    # the other on the dead-letter topic, and the worker decides on.
    big = uuid.uuid4()
    padding = "x" * MAX_INTENT_BYTES
    await fleet.send_raw(b"big", f'{{"request_id": "{big}", "labels": {{"pad": "{padding}"}}}}'.encode())
    huge = b"\xfe" * 1_000_000
    await fleet.send_raw(b"huge", huge)
    await fleet.wait_for(lambda: big in fleet.decisions, what="a BLOCK for the oversized intent")
    assert fleet.decisions[big][0].decision is BLOCK
    assert "the limit is 131072" in fleet.decisions[big][0].reasons[0]
    await fleet.wait_for(lambda: any(h.get("size") == b"1000000" for _, h in fleet.dead_letters),
                         what="the cut dead letter")
    cut = next(v for v, h in fleet.dead_letters if h.get("size") == b"1000000")
    assert cut == huge[:MAX_DEAD_LETTER_BYTES]
    ok = await fleet.decide(make_intent(agent("after"), params={"amount": 1}, occurred_at=day(5)))
    assert ok.decision is ALLOW


async def test_metrics_and_readiness(fleet_worker: WorkerProcess) -> None:
    status, body = await asyncio.to_thread(fleet_worker.get, "/metrics")
    text = body.decode()
    assert status == 200
    assert 'sluicegate_decisions_total{decision="ALLOW",final="true"}' in text
    assert "sluicegate_decision_latency_seconds_bucket" in text
    assert "sluicegate_consumer_lag{" in text
    assert 'sluicegate_policy_info{name="fleet_budget"' in text
    status, _ = await asyncio.to_thread(fleet_worker.get, "/ready")
    assert status == 200
    status, body = await asyncio.to_thread(fleet_worker.get, "/status")
    state = json.loads(body)
    assert status == 200
    assert (state["ready"], state["policy_caught_up"], state["tables_restored"]) == (True, True, True)
    intents = state["partitions"][f"{fleet_worker.names.intents}[0]"]
    assert intents["paused"] is False and intents["highwater"] is not None


async def test_sigkill_mid_stream_loses_nothing_and_resets_no_limit(
    fleet: Client, fleet_worker: WorkerProcess,
) -> None:
    t0 = day(6)
    agents = [agent("kill") for _ in range(4)]
    # 30 refunds of 50 per agent: 20 allowed each by the agent limit (4 x 20 x 50 = 4,000 < 5,000).
    intents = [make_intent(a, params={"amount": 50}, occurred_at=t0 + timedelta(seconds=i))
               for i in range(30) for a in agents]
    half = len(intents) // 2
    for intent in intents[:half]:
        await fleet.send(intent)
    await fleet.wait_for(lambda: sum(i.request_id in fleet.decisions for i in intents) >= half // 2,
                         what="some decisions before the kill")
    fleet_worker.kill()
    for intent in intents[half:]:
        await fleet.send(intent)
    fleet_worker.start()
    await fleet_worker.wait_ready()
    try:
        await fleet.wait_for(lambda: all(i.request_id in fleet.decisions for i in intents),
                             timeout_s=60, what="every intent decided after the restart")
    except AssertionError:
        missing = [(intents.index(i), i.agent_id) for i in intents if i.request_id not in fleet.decisions]
        print("MISSING", len(missing), missing[:20], "half", half)
        print("STATUS", (await asyncio.to_thread(fleet_worker.get, "/status"))[1].decode())
        print(fleet_worker.log_tail(200))
        raise
    for intent in intents:
        answers = {d.decision for d in fleet.decisions[intent.request_id]}
        assert len(answers) == 1, f"conflicting answers for {intent.request_id}: {answers}"
    per_agent = Counter(i.agent_id for i in intents if fleet.decisions[i.request_id][0].decision is ALLOW)
    assert per_agent == dict.fromkeys(agents, 20)
    # And the windows survived: the next refund of each agent is still over its limit.
    for a in agents:
        nxt = await fleet.decide(
            make_intent(a, params={"amount": 50}, occurred_at=t0 + timedelta(seconds=40)))
        assert nxt.decision is BLOCK
