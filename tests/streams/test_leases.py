"""Budget leases without Kafka: the arithmetic, and the stages over dict tables exchanging their
messages in random interleavings, where no window may ever be overspent (docs/leases.md)."""

from __future__ import annotations

import random
import uuid
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator, MutableMapping
from datetime import UTC, datetime, timedelta

import pytest

from schemas import Decision, DecisionKind, Intent
from streams.engine import CompiledPolicy, WindowChange, compile_policy
from streams.engine.compiler import LimitScope
from streams.engine.state import WindowState
from streams.messages import Feedback, Forward, LeaseAsk, LeaseGrant, LeaseReturn, Release, kind_of
from streams.stages.decide import DecideStage
from streams.stages.leases import (
    LEASE_MS,
    MAX_WAIT_MS,
    GrantRecord,
    Held,
    add_lease,
    settle_lease,
    slice_of,
    used_around,
)
from streams.stages.outputs import Outcome, Route, Send
from streams.stages.shared import SharedStage
from streams.state.table_state import TableState
from tests.streams.harness import make_intent

ALLOW = DecisionKind.ALLOW
T0 = datetime(2030, 1, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
W = 10_000


def budget_policy(limit: str, more: str = "") -> CompiledPolicy:
    """Refunds allowed, under a fleet budget per 10 s (``count: 40`` or ``sum: params.amount, max: 400``),
    with ``more`` of the policy after it (further limits, sequences)."""
    return compile_policy(f"""
policy: leases
rules:
  - {{id: refunds, match: {{tool: payments.refund}}, decision: ALLOW}}
limits:
  - {{id: budget, match: {{tool: payments.refund}}, key: fleet, window: 10s, {limit}, decision: BLOCK}}
{more}""", "leases.yaml")


def waiting_one_second(fleet: Fleet) -> Intent:
    """A refund by a1 whose agent stops waiting one second after the fleet's clock."""
    return make_intent("a1", params={"amount": 1}, occurred_at=T0,
                       wait_until=T0 + timedelta(milliseconds=fleet.now_ms - T0_MS + 1_000))


COUNT_POLICY = budget_policy("count: 40")
KEY = "budget|fleet"


# -- the arithmetic ---------------------------------------------------------------------------------------


def test_a_slice_is_a_share_of_the_room_and_never_below_what_is_needed() -> None:
    assert slice_of(room=100, want=1000, need=1, partitions=5, counting=True) == 10  # 100 / (2 * 5)
    assert slice_of(room=100, want=3, need=1, partitions=5, counting=True) == 3  # only what is wanted
    assert slice_of(room=9, want=10, need=1, partitions=5, counting=True) == 0  # under one action
    assert slice_of(room=100.0, want=50.0, need=20.0, partitions=6, counting=False) == 0  # 8.3 < 20
    assert slice_of(room=-5, want=10, need=1, partitions=1, counting=True) == 0


def test_every_window_overlapping_a_span_shorter_than_the_window_holds_one_of_its_ends() -> None:
    window = WindowState()
    add_lease(window, True, 1_000, 3_500, 3, W, None)
    for end in range(1_000, 3_500 + W, 250):  # every window (end - W, end] that overlaps the span
        inside = bisect_right(window.times_ms, end) - bisect_right(window.times_ms, end - W)
        assert inside >= 3


def test_the_room_is_that_of_the_fullest_window_holding_either_end() -> None:
    window = WindowState()
    for at in (0, 100, 200):
        window.add(at, None, W, None)
    window.add(11_000, None, W, None)
    assert used_around(window, True, 5_000, 9_000, W) == 3  # windows holding 5 s hold the first three
    assert used_around(window, True, 9_900, 12_000, W) == 3  # (-0.1 s, 9.9 s] holds 9.9 s
    assert used_around(window, True, 10_150, 12_000, W) == 1  # past the first three
    assert used_around(None, True, 0, 1, W) == 0


def _record(amount: float, counting: bool = True) -> GrantRecord:
    return GrantRecord(key=KEY, partition=0, reply_key="a", counting=counting, start_ms=1_000, end_ms=3_500,
                       amount=amount, window_ms=W, keep=None)


def test_a_return_replaces_the_lease_by_its_uses() -> None:
    window = WindowState()
    add_lease(window, False, 1_000, 3_500, 50.0, W, None)
    assert settle_lease(window, False, _record(50.0, False), [(2_000, 20.0), (3_000, 5.0)])
    assert list(window.times_ms) == [2_000, 3_000] and list(window.values or ()) == [20.0, 5.0]


def test_a_return_that_spent_more_than_lent_keeps_the_lease_counted() -> None:
    window = WindowState()
    add_lease(window, True, 1_000, 3_500, 1, W, None)
    assert not settle_lease(window, True, _record(1), [(2_000, 0.0), (2_100, 0.0)])
    assert list(window.times_ms) == [1_000, 2_000, 2_100, 3_500]  # stricter, never laxer
    window = WindowState()
    add_lease(window, True, 1_000, 3_500, 1, W, None)
    assert not settle_lease(window, True, _record(1), [(9_000, 0.0)])  # outside its span
    assert list(window.times_ms) == [1_000, 3_500, 9_000]


def test_a_lease_is_spent_only_inside_its_span_and_its_amount() -> None:
    lease = Held(lease_id=uuid.uuid4(), policy_version="v", start_ms=1_000, end_ms=3_500, amount=2, held_ms=0)
    assert lease.covers(1_000, 1, "v") and lease.covers(3_500, 1, "v")
    assert not lease.covers(3_501, 1, "v") and not lease.covers(999, 1, "v")  # expired / not yet
    assert not lease.covers(2_000, 3, "v")  # more than lent
    assert not lease.covers(2_000, 1, "w")  # another policy


def _overspent(times: list[int], limit: int) -> bool:
    times = sorted(times)
    return any(bisect_right(times, end) - bisect_right(times, end - W) > limit for end in times)


def test_a_holder_spending_past_its_span_would_overspend() -> None:
    """Why the span matters: the lease is counted at its two ends only, so a use long after its end
    lies in windows that hold neither, where the owner lends or allows the whole budget again."""
    owner = WindowState()
    lease_start, lease_end = 0, 2_500
    add_lease(owner, True, lease_start, lease_end, 5, W, None)
    late = lease_end + W  # a use the span does not cover
    allowed = []
    for _ in range(10):  # the owner's slow path at the same time: windows holding `late`
        if owner.peak_count(late, W) < 10:
            owner.add(late, None, W, None)
            allowed.append(late)
    assert _overspent([*allowed, *[late] * 5], 10)  # 15 actions in (2.5 s, 12.5 s]
    lease = Held(lease_id=uuid.uuid4(), policy_version="v", start_ms=lease_start, end_ms=lease_end,
                 amount=5, held_ms=0)
    assert not lease.covers(late, 1, "v")  # which is why the holder never spends it there


# -- the stages, two deciding partitions and one owner, random interleavings ------------------------------


class Fleet:
    """Two decide stages (partition 0: agents a*, 1: agents b*) and the owner of the budget key, over dict
    tables. Messages wait in per-destination FIFO queues (Kafka's per-partition order) and are delivered
    in a random interleaving; the clock moves as the test says."""

    def __init__(self, policy: CompiledPolicy, rng: random.Random) -> None:
        self.policy = policy
        self.rng = rng
        self.now_ms = T0_MS
        self.tables: list[dict[str, bytes]] = [{}, {}]
        self.deciders = [DecideStage(table, partitions=2) for table in self.tables]
        self.owner_table: dict[str, bytes] = {}
        self.owner = SharedStage(self.owner_table)
        self.queues: dict[str, deque[Send]] = {"shared": deque(), "fb0": deque(), "fb1": deque()}
        self.decisions: dict[str, Decision] = {}
        self.amounts: dict[str, float] = {}
        self.at_ms: dict[str, int] = {}
        self.internal = 0
        self.intents = 0

    @staticmethod
    def home(agent: str) -> int:
        return 0 if agent.startswith("a") else 1

    def post(self, sends: list[Send]) -> None:
        for send in sends:
            if send.route is Route.DECISIONS:
                decision = Decision.model_validate_json(send.value)
                self.decisions[str(decision.request_id)] = decision
            elif send.route is Route.SHARED:
                self.internal += 1
                self.queues["shared"].append(send)
            elif send.route is Route.FEEDBACK:
                self.internal += 1
                self.queues[f"fb{self.home(send.key.decode())}"].append(send)

    def intent(self, agent: str, amount: float, skew_ms: int = 0) -> Outcome:
        at = T0 + timedelta(milliseconds=self.now_ms - T0_MS + skew_ms)
        intent = make_intent(agent, params={"amount": amount}, occurred_at=at)
        self.amounts[str(intent.request_id)] = amount
        self.at_ms[str(intent.request_id)] = intent.occurred_at_ms
        self.intents += 1
        stage = self.deciders[self.home(agent)]
        outcome = stage.handle_intent(intent.model_dump_json().encode(), agent.encode(), self.policy,
                                      self.home(agent), self.now_ms)
        self.post(outcome.sends)
        return outcome

    def deliver_one(self) -> bool:
        ready = [name for name, queue in self.queues.items() if queue]
        if not ready:
            return False
        name = self.rng.choice(ready)
        send = self.queues[name].popleft()
        self.post(self.handle(name, send))
        return True

    def handle(self, name: str, send: Send) -> list[Send]:
        kind, body, now = kind_of(send.value), send.value, self.now_ms
        if name == "shared":
            if kind == "leaseask":
                return self.owner.handle_ask(LeaseAsk.model_validate_json(body), self.policy, 0, now)
            if kind == "leasereturn":
                self.owner.handle_return(LeaseReturn.model_validate_json(body), 0, now)
                return []
            if kind == "release":
                self.owner.handle_release(Release.model_validate_json(body), 0, now)
                return []
            return self.owner.handle_forward(Forward.model_validate_json(body), self.policy, 0, now).sends
        partition = int(name[-1])
        stage = self.deciders[partition]
        if kind == "leasegrant":
            grant = LeaseGrant.model_validate_json(body)
            return [send for outcome in stage.handle_grant(grant, partition, now) for send in outcome.sends]
        return stage.handle_feedback(Feedback.model_validate_json(body), partition, now)

    def drain(self) -> None:
        while self.deliver_one():
            pass

    def tick(self) -> None:
        for partition, stage in enumerate(self.deciders):
            self.post(stage.tick(partition, self.now_ms))

    def allowed(self) -> list[tuple[int, float]]:
        return sorted((self.at_ms[rid], self.amounts[rid]) for rid, d in self.decisions.items()
                      if d.decision is ALLOW)


def _worst_window(allowed: list[tuple[int, float]], counting: bool) -> float:
    times = [at for at, _ in allowed]
    worst = 0.0
    for end in times:
        inside = allowed[bisect_right(times, end - W):bisect_right(times, end)]
        worst = max(worst, len(inside) if counting else sum(value for _, value in inside))
    return worst


@pytest.mark.parametrize(("limit", "counting", "budget", "room"), [
    ("count: 40", True, 40, False), ("sum: params.amount, max: 400", False, 400, False),
    ("count: 2000", True, 2000, True), ("sum: params.amount, max: 20000", False, 20000, True),
])
@pytest.mark.parametrize("seed", range(4))
def test_random_interleavings_never_overspend_a_window(
    limit: str, counting: bool, budget: float, room: bool, seed: int,
) -> None:
    """Four agents on two partitions, about 50 refunds/s for 18 s of event time (some stamped up to
    0.3 s late), messages delivered in random order across partitions, returns on random ticks: the
    allowed refunds never exceed the budget in any 10 s window. Without room (a budget of ~4 s of
    refunds) the edge is decided on the slow path; with room, leases decide most refunds alone."""
    rng = random.Random(seed)
    fleet = Fleet(budget_policy(limit), rng)
    for step in range(900):
        fleet.now_ms += rng.choice((5, 10, 20, 40))
        agent = rng.choice(("a1", "a2", "b1", "b2"))
        fleet.intent(agent, rng.choice((1, 5, 10, 25)), skew_ms=-rng.randrange(0, 300))
        for _ in range(rng.randrange(0, 4)):
            fleet.deliver_one()
        if step % 25 == 0:
            fleet.tick()
    for _ in range(2):  # grants still on their way are held, then returned
        fleet.now_ms += 3 * LEASE_MS
        fleet.drain()
        fleet.tick()
        fleet.drain()
    allowed = fleet.allowed()
    assert len(fleet.decisions) == fleet.intents
    assert _worst_window(allowed, counting) <= budget
    if room:
        assert len(allowed) == fleet.intents
        assert fleet.internal / fleet.intents < 0.3  # 2 hops per intent without leases
    else:
        spent = len(allowed) if counting else sum(value for _, value in allowed)
        assert spent >= 1.5 * budget  # the budget was spent, and again as the window slid
    # Every lease was returned: the owner counts exactly the actions allowed.
    state = TableState(fleet.owner_table).get_window(KEY)
    assert state is not None and list(state.times_ms) == [at for at, _ in allowed][-len(state.times_ms):]


def test_with_room_a_partition_decides_alone_after_its_first_ask() -> None:
    fleet = Fleet(COUNT_POLICY, random.Random(0))
    fleet.intent("a1", 1)
    assert [kind_of(s.value) for s in fleet.queues["shared"]] == ["leaseask"]  # it waits for the answer
    fleet.drain()
    before = fleet.internal
    for _ in range(2):
        fleet.now_ms += 10
        assert fleet.intent("a1", 1).leased
    assert fleet.internal == before  # decided on the agent's partition: no hop at all
    assert all(d.decision is ALLOW for d in fleet.decisions.values())
    owner = TableState(fleet.owner_table).get_window(KEY)
    # a lease of min(64 wanted, 40 left / (2 x 2 partitions)) counted twice
    assert owner is not None and len(owner.times_ms) == 2 * 10
    fleet.now_ms += 3 * LEASE_MS
    fleet.tick()
    fleet.drain()
    owner = TableState(fleet.owner_table).get_window(KEY)
    assert owner is not None and len(owner.times_ms) == 3  # the lease replaced by its 2 uses


def _kinds(fleet: Fleet) -> list[str | None]:
    return [kind_of(send.value) for send in fleet.queues["shared"]]


def test_intents_arriving_while_an_ask_is_open_wait_for_its_answer() -> None:
    """A backlog of 30 refunds on one partition, the grant still on its way: one ask, no forward. The
    grant covers 10 of them (40 left / (2 x 2 partitions)), one more ask the next 5; only the last 15
    take the hops, where the budget's edge is decided exactly."""
    fleet = Fleet(COUNT_POLICY, random.Random(0))
    outcomes = []
    for _ in range(30):
        fleet.now_ms += 1
        outcomes.append(fleet.intent("a1", 1))
    assert _kinds(fleet) == ["leaseask"] and not fleet.decisions
    assert all(outcome.waiting for outcome in outcomes)  # what the worker's metrics count
    fleet.post(fleet.handle("shared", fleet.queues["shared"].popleft()))
    fleet.post(fleet.handle("fb0", fleet.queues["fb0"].popleft()))
    assert len(fleet.decisions) == 10 and _kinds(fleet) == ["leaseask"]  # asked again for the other 20
    fleet.post(fleet.handle("shared", fleet.queues["shared"].popleft()))
    fleet.post(fleet.handle("fb0", fleet.queues["fb0"].popleft()))
    assert len(fleet.decisions) == 15 and _kinds(fleet) == ["forward"] * 15  # waited twice: the hops
    fleet.drain()
    allowed = fleet.allowed()
    assert len(fleet.decisions) == 30 and _worst_window(allowed, True) <= 40
    assert len(allowed) == 25  # 40 less the two leases' second ends, still out (returned later)


def test_a_refused_ask_sends_the_intents_waiting_for_it_on_the_hops() -> None:
    fleet = Fleet(COUNT_POLICY, random.Random(0))
    for _ in range(3):
        fleet.intent("a1", 1)
    ask = LeaseAsk.model_validate_json(fleet.queues["shared"].popleft().value)
    refusal = LeaseGrant(ask_id=ask.ask_id, key=ask.key, policy_version=ask.policy_version, partition=0,
                         start_ms=ask.start_ms, end_ms=ask.end_ms, amount=0.0)
    outcomes = fleet.deciders[0].handle_grant(refusal, 0, fleet.now_ms)
    assert [o.forwarded for o in outcomes] == [True] * 3
    fleet.post([send for outcome in outcomes for send in outcome.sends])
    fleet.drain()
    assert [d.decision for d in fleet.decisions.values()] == [ALLOW] * 3
    fleet.intent("a1", 1)  # refused lately: no ask, and nothing to wait for
    assert _kinds(fleet) == ["forward"]


def test_an_ask_unanswered_on_a_caught_up_partition_sends_its_waiting_intents_on_the_hops() -> None:
    fleet = Fleet(COUNT_POLICY, random.Random(0))
    fleet.intent("a1", 1)
    fleet.queues["shared"].clear()  # the ask is lost
    fleet.now_ms += MAX_WAIT_MS - 1
    fleet.tick()
    assert not fleet.queues["shared"]  # still waiting
    fleet.now_ms += 1
    fleet.tick()
    assert _kinds(fleet) == ["forward"]
    fleet.drain()
    assert [d.decision for d in fleet.decisions.values()] == [ALLOW]


def test_an_intent_whose_agent_stopped_waiting_before_the_answer_is_blocked_and_counts_nothing() -> None:
    """The agent was told it could not know (``governance_unavailable``) at its ``wait_until``: a grant
    coming after that must not ALLOW the intent (a conflict); it is BLOCKed ``wait_expired`` and its
    reservation undone."""
    policy = budget_policy("count: 40", """\
  - {id: mine, match: {tool: payments.refund}, key: agent, window: 10s, count: 1, decision: BLOCK}
""")
    fleet = Fleet(policy, random.Random(0))
    intent = waiting_one_second(fleet)
    outcome = fleet.deciders[0].handle_intent(intent.model_dump_json().encode(), b"a1", fleet.policy, 0,
                                              fleet.now_ms)
    assert outcome.waiting
    fleet.post(outcome.sends)
    fleet.post(fleet.handle("shared", fleet.queues["shared"].popleft()))
    fleet.now_ms += 1_001
    fleet.drain()
    decision = fleet.decisions[str(intent.request_id)]
    assert (decision.decision, decision.determining) == (DecisionKind.BLOCK, ("wait_expired",))
    fleet.intent("a1", 1)  # the agent's own limit (1 per 10 s) was not spent by the expired one
    fleet.drain()
    assert [d.decision for d in fleet.decisions.values()] == [DecisionKind.BLOCK, ALLOW]


def test_a_forward_reaching_its_last_hop_after_the_agent_stopped_waiting_is_blocked_once() -> None:
    """The slow path's answer can come after the agent's ``wait_until`` (a take-over of the key's
    partition, a broker restart): the last hop BLOCKs it ``wait_expired``, releases the budget, and a
    redelivered forward gets the same answer."""
    fleet = Fleet(budget_policy("count: 4"), random.Random(0))  # too small to lease: the hops decide
    intent = waiting_one_second(fleet)
    outcome = fleet.deciders[0].handle_intent(intent.model_dump_json().encode(), b"a1", fleet.policy, 0,
                                              fleet.now_ms)
    (forward,) = outcome.sends
    fleet.now_ms += 1_001
    first = fleet.handle("shared", forward)
    again = fleet.handle("shared", forward)  # redelivered: the same answer (released once)
    decided = [send for send in first if send.route is Route.DECISIONS]
    assert [send for send in again if send.route is Route.DECISIONS] == decided
    fleet.post(first)
    fleet.drain()
    decision = fleet.decisions[str(intent.request_id)]
    assert (decision.decision, decision.determining) == (DecisionKind.BLOCK, ("wait_expired",))
    for _ in range(4):  # the budget was not spent by it
        fleet.intent("a2", 1)
    fleet.drain()
    assert [d.decision for d in fleet.decisions.values()] == [DecisionKind.BLOCK] + [ALLOW] * 4


def test_an_intent_expired_at_its_last_hop_counts_nothing_in_sequence_rules() -> None:
    """An intent the last hop BLOCKs ``wait_expired`` was never judged by the policy: like one the
    deciding stage finds expired, it counts nothing, so a sequence rule over BLOCKed actions does not
    contain the agent for the system's slowness."""
    policy = budget_policy("count: 4", """\
sequences:
  - id: contain-after-refused-refund
    after: {match: {tool: payments.refund}, decision: BLOCK}
    match: {tool: payments.refund}
    within: 1h
    key: agent
    decision: BLOCK
""")
    fleet = Fleet(policy, random.Random(0))
    intent = waiting_one_second(fleet)
    home = Fleet.home("a1")
    outcome = fleet.deciders[home].handle_intent(intent.model_dump_json().encode(), b"a1", policy, home,
                                                 fleet.now_ms)
    (forward,) = outcome.sends
    fleet.now_ms += 1_001
    fleet.post(fleet.handle("shared", forward))
    fleet.drain()
    expired = fleet.decisions.pop(str(intent.request_id))
    assert (expired.decision, expired.determining) == (DecisionKind.BLOCK, ("wait_expired",))
    fleet.intent("a1", 1)  # the same agent again, in time
    fleet.drain()
    (after,) = fleet.decisions.values()
    assert after.decision is ALLOW, after.reasons


def test_what_a_grant_settled_is_sent_again_by_the_next_owner_until_the_producer_flushed() -> None:
    """A worker decides the waiting intents when the grant comes and dies before its producer sent the
    decisions. The grant, redelivered, no longer settles anything (its ask is answered): the next owner
    of the partition sends the decisions again from the table; after a flush there is nothing left."""
    fleet = Fleet(COUNT_POLICY, random.Random(0))
    for _ in range(3):
        fleet.intent("a1", 1)
    grant = fleet.handle("shared", fleet.queues["shared"].popleft())
    lost = fleet.handle("fb0", grant[0])  # the decisions, never delivered
    assert len([s for s in lost if s.route is Route.DECISIONS]) == 3 and not fleet.decisions
    successor = DecideStage(fleet.tables[0], partitions=2)  # the same table, restored
    assert [o.sends for o in successor.handle_grant(LeaseGrant.model_validate_json(grant[0].value), 0,
                                                    fleet.now_ms)] == []
    again = successor.unsent(0)
    assert sorted(s.value for s in again) == sorted(s.value for s in lost if s.route is not Route.SHARED)
    fleet.post(again)
    assert [d.decision for d in fleet.decisions.values()] == [ALLOW] * 3
    successor.flushed(0)
    assert successor.unsent(0) == []


def test_a_waiting_intent_redelivered_takes_the_hops_and_is_decided_once() -> None:
    """After a crash the ask may be lost: a redelivered waiting intent goes on the hops at once, and the
    grant, should it come after all, does not decide it a second time."""
    fleet = Fleet(COUNT_POLICY, random.Random(0))
    intent = make_intent("a1", params={"amount": 1}, occurred_at=T0)
    raw = intent.model_dump_json().encode()
    first = fleet.deciders[0].handle_intent(raw, b"a1", COUNT_POLICY, 0, fleet.now_ms)
    assert [kind_of(s.value) for s in first.sends] == ["leaseask"]
    again = fleet.deciders[0].handle_intent(raw, b"a1", COUNT_POLICY, 0, fleet.now_ms)
    assert again.duplicate and [kind_of(s.value) for s in again.sends] == ["forward"]
    grant = fleet.handle("shared", first.sends[0])
    assert fleet.handle("fb0", grant[0]) == []  # it no longer waits
    fleet.post(again.sends)
    fleet.drain()
    assert [d.decision for d in fleet.decisions.values()] == [ALLOW]


def test_grants_and_returns_are_idempotent_and_strangers_change_nothing() -> None:
    fleet = Fleet(COUNT_POLICY, random.Random(0))
    fleet.intent("a1", 1)
    ask = fleet.queues["shared"].popleft()
    grant = fleet.handle("shared", ask)
    assert fleet.handle("shared", ask) == grant  # a redelivered ask: the same grant, lent once
    owner_before = dict(fleet.owner_table)
    body = LeaseGrant.model_validate_json(grant[0].value)
    # A grant for the other partition, or for an ask nobody made, is not held.
    assert fleet.deciders[1].handle_grant(body, 1, fleet.now_ms) == []
    stranger = body.model_copy(update={"ask_id": uuid.uuid4()})
    back = [send for outcome in fleet.deciders[0].handle_grant(stranger, 0, fleet.now_ms)
            for send in outcome.sends]
    assert [kind_of(s.value) for s in back] == ["leasereturn"]  # returned unused at once
    fleet.owner.handle_return(LeaseReturn.model_validate_json(back[0].value), 0, fleet.now_ms)
    assert fleet.owner_table == owner_before  # the owner never lent it: nothing changes
    waited = fleet.deciders[0].handle_grant(body, 0, fleet.now_ms)  # the refund that asked is decided
    assert [o.decision.decision for o in waited if o.decision] == [ALLOW]
    assert fleet.deciders[0].handle_grant(body, 0, fleet.now_ms) == []  # redelivered: held once
    fleet.now_ms += 10
    fleet.intent("a1", 1)
    assert not fleet.queues["shared"]  # decided under the lease
    fleet.now_ms += 3 * LEASE_MS
    returns = fleet.deciders[0].tick(0, fleet.now_ms)
    assert fleet.deciders[0].tick(0, fleet.now_ms) == []  # returned once
    returned = LeaseReturn.model_validate_json(returns[0].value)
    forged = returned.model_copy(update={"partition": 1})
    fleet.owner.handle_return(forged, 0, fleet.now_ms)  # not the partition it was lent to
    assert len(TableState(fleet.owner_table).get_window(KEY).times_ms) == 2 * 10  # type: ignore[union-attr]
    fleet.owner.handle_return(returned, 0, fleet.now_ms)
    fleet.owner.handle_return(returned, 0, fleet.now_ms)
    assert len(TableState(fleet.owner_table).get_window(KEY).times_ms) == 2  # type: ignore[union-attr]
    assert fleet.deciders[0].handle_grant(body, 0, fleet.now_ms) == []  # a returned lease: not again


def test_an_ask_for_what_the_policy_does_not_lend_gets_nothing() -> None:
    fleet = Fleet(COUNT_POLICY, random.Random(0))
    ask = LeaseAsk(ask_id=uuid.uuid4(), key=KEY, limit_id="budget", policy_version="x", partition=0,
                   partitions=2, reply_key="a1", start_ms=0, end_ms=10 * W, want=10, need=1)
    def lent(ask: LeaseAsk) -> float:
        return LeaseGrant.model_validate_json(fleet.owner.handle_ask(ask, COUNT_POLICY, 0, 0)[0].value).amount

    assert lent(ask) == 0  # a span as long as the window
    other = ask.model_copy(update={"ask_id": uuid.uuid4(), "end_ms": 2_000, "limit_id": "nope"})
    assert lent(other) == 0  # no such limit
    assert TableState(fleet.owner_table).get_window(KEY) is None


def test_a_window_change_decides_if_a_lease_may_be_asked() -> None:
    from streams.stages.leases import leasable, need_of, span_of

    change = WindowChange("x", LimitScope.SHARED, "x|fleet", 0, None, 60_000, None)
    assert leasable(change, budget=1_000, partitions=6)  # 41 actions per lease span, 6 partitions
    assert not leasable(change._replace(window_ms=5_000), budget=1_000, partitions=6)  # window too short
    assert not leasable(change, budget=200, partitions=6)  # 8 actions per span: spent in a burst
    assert not leasable(change._replace(value=-1.0), budget=1_000, partitions=6)  # no lease covers it
    assert need_of(change) == 1 and need_of(change._replace(value=30.0)) == 30
    assert span_of(0, 10_000) == (-500, 2_000)  # the shortest span
    assert span_of(0, 86_400_000) == (-15_000, 60_000)  # a 24 h window: a minute, a backlog's worth


class _Recording(MutableMapping[str, bytes]):
    """A table that logs its writes in order (None: a delete), as the runner sends them to the changelog."""

    def __init__(self, data: dict[str, bytes]) -> None:
        self.data = data
        self.log: list[tuple[str, bytes | None]] = []

    def __getitem__(self, key: str) -> bytes:
        return self.data[key]

    def __setitem__(self, key: str, value: bytes) -> None:
        self.data[key] = value
        self.log.append((key, value))

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        self.log.append((key, None))

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def _replayed(before: dict[str, bytes], writes: list[tuple[str, bytes | None]]) -> dict[str, bytes]:
    table = dict(before)
    for key, value in writes:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return table


@pytest.mark.parametrize(("answer", "waiting"),
                         [("grant", 30), ("refusal", 30), ("tick", 30), ("grant", 150)])
def test_a_crash_after_any_prefix_of_a_settlements_writes_loses_no_waiting_intent(answer: str,
                                                                                   waiting: int) -> None:
    """A worker settling the intents waiting for an ask (a grant covering some of them, a refusal, or the
    tick after an unanswered ask; 150 fill three lists) dies after some prefix of the table writes
    reached the changelog, and before any of its outputs went out (the runner sends a record's writes
    first). Whatever the prefix, the next owner of the partition (the redelivered answer, its tick, the
    hops) decides every intent, each once."""
    fleet = Fleet(budget_policy("count: 400") if waiting > 30 else COUNT_POLICY, random.Random(0))
    for _ in range(waiting):
        fleet.now_ms += 1
        assert fleet.intent("a1", 1).waiting
    ids = list(fleet.amounts)
    ask = LeaseAsk.model_validate_json(fleet.queues["shared"].popleft().value)
    grant = LeaseGrant.model_validate_json(fleet.handle("shared", Send(
        Route.SHARED, ask.key.encode(), ask.model_dump_json().encode()))[0].value)
    if answer == "refusal":
        grant = grant.model_copy(update={"amount": 0.0})
    policy = fleet.policy
    before = dict(fleet.tables[0])
    dying = DecideStage(_Recording(dict(before)), partitions=2)
    if answer == "tick":
        fleet.now_ms += MAX_WAIT_MS
        dying.tick(0, fleet.now_ms)
    else:
        dying.handle_grant(grant, 0, fleet.now_ms)
    writes = dying.table.log  # type: ignore[attr-defined]
    assert len(writes) > waiting
    for cut in range(len(writes) + 1):
        survivor = Fleet(policy, random.Random(cut))
        survivor.owner_table.update(fleet.owner_table)
        survivor.now_ms = fleet.now_ms
        survivor.tables[0] = _replayed(before, writes[:cut])
        survivor.deciders[0] = DecideStage(survivor.tables[0], partitions=2)
        finals: dict[str, set[DecisionKind]] = {}
        post = survivor.post

        def noted(sends: list[Send], post: Callable[[list[Send]], None] = post,
                  finals: dict[str, set[DecisionKind]] = finals) -> None:
            for send in sends:
                if send.route is Route.DECISIONS:
                    decision = Decision.model_validate_json(send.value)
                    finals.setdefault(str(decision.request_id), set()).add(decision.decision)
            post(sends)

        survivor.post = noted  # type: ignore[method-assign]
        survivor.post(survivor.deciders[0].unsent(0))
        if answer != "tick":
            survivor.post([s for o in survivor.deciders[0].handle_grant(grant, 0, survivor.now_ms)
                           for s in o.sends])
        for _ in range(3):
            survivor.drain()
            survivor.now_ms += MAX_WAIT_MS
            survivor.tick()
        survivor.drain()
        assert sorted(finals) == sorted(ids), f"cut after {cut} of {len(writes)} writes"
        assert all(len(kinds) == 1 for kinds in finals.values()), f"cut after {cut}"
