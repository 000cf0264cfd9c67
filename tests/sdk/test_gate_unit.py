"""Gate and guard over a scripted transport: which exception, whether the tool ran, what was reported."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from infra.kafka.process import free_port
from schemas import AuditEventType, AuditRecord, DecisionKind, ExecutionOutcome, Intent, OutcomeStatus
from sluicegate import (
    GOVERNANCE_UNAVAILABLE,
    ActionBlocked,
    ApprovalDenied,
    ApprovalExpired,
    Backoff,
    CircuitBreaker,
    Gate,
    GateNotStarted,
    GovernanceUnavailable,
    InvalidIntent,
    Settings,
    SluicegateError,
)
from sluicegate.transport import RecordHeaders
from tests.sdk.fakes import FakeTransport, Reply, Responder, decision_for, pending_for

FAST = 0.2


def allow(intent: Intent) -> list[Reply]:
    return [decision_for(intent)]


def block(intent: Intent) -> list[Reply]:
    return [decision_for(intent, DecisionKind.BLOCK, reasons=("refund over 500",), rules=("refund-max",))]


def silent(intent: Intent) -> list[Reply]:
    return []


def make_gate(responder: Responder | None, **options: object) -> tuple[Gate, FakeTransport]:
    transport = FakeTransport(responder)
    settings = Settings(kafka_bootstrap_servers="unused:1", decision_timeout_s=FAST)
    gate = Gate(settings, agent_id="sup-1", agent_role="support", environment="production", owner="team-a",
                transport=transport, **options)  # type: ignore[arg-type]
    return gate, transport


@pytest.fixture
async def allowing() -> AsyncIterator[tuple[Gate, FakeTransport]]:
    gate, transport = make_gate(allow)
    async with gate:
        yield gate, transport


REFUND: dict[str, Any] = {"tool": "payments.refund", "action": "create", "target": "payments:refunds"}


async def test_check_returns_the_decision_for_its_intent(allowing: tuple[Gate, FakeTransport]) -> None:
    gate, transport = allowing
    decision = await gate.check(**REFUND, params={"amount": 20})
    assert decision.decision is DecisionKind.ALLOW
    (intent,) = transport.sent
    assert decision.request_id == intent.request_id
    assert (intent.agent_id, intent.agent_role, intent.environment, intent.agent_owner) == (
        "sup-1", "support", "production", "team-a")
    assert intent.params == {"amount": 20}


async def test_per_call_agent_override(allowing: tuple[Gate, FakeTransport]) -> None:
    gate, transport = allowing
    await gate.check(**REFUND, agent_id="sup-2", environment="staging")
    assert (transport.sent[0].agent_id, transport.sent[0].environment) == ("sup-2", "staging")


async def test_missing_agent_fields_and_bad_intents_are_invalid() -> None:
    transport = FakeTransport(allow)
    async with Gate(Settings(kafka_bootstrap_servers="x:1"), transport=transport) as gate:
        with pytest.raises(InvalidIntent, match="agent_id, agent_role, environment"):
            await gate.check(**REFUND)
        with pytest.raises(InvalidIntent, match="target"):
            await gate.check(tool="t", action="read", target="no-colon", agent_id="a", agent_role="r",
                             environment="dev")
        with pytest.raises(InvalidIntent):
            await gate.check(tool="t", action="explode", target="a:b", agent_id="a", agent_role="r",
                             environment="dev")
    assert transport.sent == []


async def test_check_before_start_raises() -> None:
    gate, _ = make_gate(allow)
    with pytest.raises(GateNotStarted):
        await gate.check(**REFUND)


async def test_guard_runs_the_tool_on_allow_and_reports_success(allowing: tuple[Gate, FakeTransport]) -> None:
    gate, transport = allowing

    @gate.guard(**REFUND, params=lambda customer, amount: {"amount": amount})
    async def refund(customer: str, amount: float) -> str:
        return f"refunded {amount} to {customer}"

    assert await refund("c-1", amount=42) == "refunded 42 to c-1"
    assert transport.sent[0].params == {"amount": 42}
    (outcome,) = transport.outcomes()
    assert isinstance(outcome, ExecutionOutcome)
    assert outcome.status is OutcomeStatus.SUCCESS and not outcome.fail_open
    assert outcome.request_id == transport.sent[0].request_id and outcome.duration_ms >= 0


async def test_guard_on_a_sync_tool_with_the_async_gate(allowing: tuple[Gate, FakeTransport]) -> None:
    gate, transport = allowing

    @gate.guard(tool="crm.get_account", action="read", target=lambda account: f"crm:{account}")
    def get_account(account: str) -> dict[str, str]:
        return {"id": account}

    assert await get_account("acme") == {"id": "acme"}
    assert transport.sent[0].target == "crm:acme"


async def test_guard_reports_tool_errors_and_reraises(allowing: tuple[Gate, FakeTransport]) -> None:
    gate, transport = allowing

    @gate.guard(**REFUND)
    async def refund() -> None:
        raise RuntimeError("card processor said no")

    with pytest.raises(RuntimeError, match="card processor"):
        await refund()
    (outcome,) = transport.outcomes()
    assert isinstance(outcome, ExecutionOutcome)
    assert outcome.status is OutcomeStatus.ERROR
    assert outcome.error == "RuntimeError: card processor said no"


async def test_guard_blocks_without_running_the_tool() -> None:
    gate, transport = make_gate(block)
    ran = []

    @gate.guard(**REFUND)
    async def refund() -> None:
        ran.append(True)

    async with gate:
        with pytest.raises(ActionBlocked) as info:
            await refund()
    assert not ran
    assert type(info.value) is ActionBlocked
    assert info.value.reasons == ("refund over 500",) and info.value.rules == ("refund-max",)
    assert info.value.request_id == transport.sent[0].request_id
    assert transport.outcomes() == []


async def test_failing_params_function_is_invalid_and_the_tool_does_not_run(
    allowing: tuple[Gate, FakeTransport],
) -> None:
    gate, transport = allowing

    @gate.guard(**REFUND, params=lambda amount: {"amount": 1 / amount})
    async def refund(amount: float) -> None:
        raise AssertionError("must not run")

    with pytest.raises(InvalidIntent, match="ZeroDivisionError"):
        await refund(0)
    assert transport.sent == []


async def test_no_decision_blocks_with_governance_unavailable_within_the_deadline() -> None:
    gate, _ = make_gate(silent)
    async with gate:
        loop = asyncio.get_running_loop()
        started = loop.time()
        decision = await gate.check(**REFUND)
        elapsed = loop.time() - started
    assert decision.decision is DecisionKind.BLOCK and decision.final
    assert decision.reasons[0].startswith(f"{GOVERNANCE_UNAVAILABLE}: no decision within")
    assert FAST <= elapsed < FAST + 0.5


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (lambda i: [f'{{"request_id": "{i.request_id}", "decision": "ALLOW"}}'.encode()], "unparseable"),
        (lambda i: [decision_for(i, agent_id="someone-else")], "someone-else"),
    ],
)
async def test_unusable_replies_block(reply: Responder, match: str) -> None:
    gate, _ = make_gate(reply)
    ran = []

    @gate.guard(**REFUND)
    async def refund() -> None:
        ran.append(True)

    async with gate:
        with pytest.raises(GovernanceUnavailable, match=match) as info:
            await refund()
    assert not ran
    assert info.value.decision.reasons[0].startswith(GOVERNANCE_UNAVAILABLE)


async def test_send_failure_and_disconnection_block() -> None:
    gate, transport = make_gate(allow)
    async with gate:
        transport.send_error = "cannot publish the intent: broker gone"
        decision = await gate.check(**REFUND)
        assert "broker gone" in decision.reasons[0]
        transport.send_error, transport.is_connected = None, False
        decision = await gate.check(**REFUND)
        assert decision.reasons[0] == f"{GOVERNANCE_UNAVAILABLE}: not connected to Kafka (fake broker down)"


async def test_pending_then_final_allow_waits_for_the_final_decision() -> None:
    def approve_later(intent: Intent) -> list[Reply]:
        return [pending_for(intent, 30), decision_for(intent, approved_by=("alice",))]

    gate, _ = make_gate(approve_later)
    async with gate:
        decision = await gate.check(**REFUND)
    assert decision.decision is DecisionKind.ALLOW and decision.final and decision.approved_by == ("alice",)


async def test_pending_then_final_block_is_approval_denied() -> None:
    def deny(intent: Intent) -> list[Reply]:
        return [pending_for(intent, 30), decision_for(intent, DecisionKind.BLOCK, reasons=("denied by bob",))]

    gate, _ = make_gate(deny)

    @gate.guard(**REFUND)
    async def refund() -> None:
        raise AssertionError("must not run")

    async with gate:
        with pytest.raises(ApprovalDenied, match="denied by bob"):
            await refund()


async def test_pending_without_final_expires_at_the_approval_deadline_not_the_decision_timeout() -> None:
    gate, transport = make_gate(lambda intent: [pending_for(intent, deadline_in_s=0.1)])

    @gate.guard(**REFUND)
    async def refund() -> None:
        raise AssertionError("must not run")

    async with gate:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ApprovalExpired) as info:
            await refund()
        elapsed = loop.time() - started
    decision = info.value.decision
    assert decision.decision is DecisionKind.BLOCK and decision.final
    assert decision.reasons[0].startswith("approval_expired: no final decision by")
    assert decision.rules == ("refund-approval",)
    # deadline 0.1 s plus a grace of one decision timeout
    assert 0.1 + FAST - 0.05 <= elapsed < 0.1 + FAST + 0.5
    assert gate.breaker.state.value == "closed"  # a pending answer proves the processor is up
    assert transport.emitted == []


async def test_asking_for_a_request_already_waiting_is_refused_and_the_first_call_keeps_its_answer() -> None:
    """The same intent authorized twice at once: the second is an error, and must not take the first
    call's waiter with it (the first would then time out as governance unavailable, and a fail-open
    tool would run without a decision)."""
    gate, transport = make_gate(lambda intent: [])  # nobody answers until the test does
    async with gate:
        intent = gate.intent(**REFUND)
        first = asyncio.create_task(gate.authorize(intent))
        await asyncio.sleep(0)  # the fake transport does not suspend: the first call now waits
        assert len(transport.sent) == 1
        with pytest.raises(ValueError, match="already waiting"):
            await gate.authorize(intent)
        answer = decision_for(transport.sent[0])
        transport.demux.feed(0, intent.agent_id.encode(), answer.model_dump_json().encode(), ())
        auth = await first
    assert (auth.decision.decision, auth.unavailable) == (DecisionKind.ALLOW, False)


async def test_on_pending_is_called_once_when_a_call_turns_to_awaiting_a_reviewer() -> None:
    seen: list[tuple[Intent, DecisionKind, bool]] = []

    def twice_pending_then_allow(intent: Intent) -> list[Reply]:
        return [pending_for(intent, 30), pending_for(intent, 30), decision_for(intent)]

    gate, transport = make_gate(twice_pending_then_allow,
                                on_pending=lambda intent, d: seen.append((intent, d.decision, d.final)))
    async with gate:
        decision = await gate.check(**REFUND)
    assert decision.decision is DecisionKind.ALLOW and decision.final
    assert seen == [(transport.sent[0], DecisionKind.REQUIRE_APPROVAL, False)]


async def test_on_pending_is_not_called_for_a_call_decided_at_once() -> None:
    seen: list[Intent] = []
    gate, _ = make_gate(allow, on_pending=lambda intent, d: seen.append(intent))
    async with gate:
        await gate.check(**REFUND)
    assert seen == []


async def test_pending_wait_is_bounded_by_max_approval_wait() -> None:
    gate, _ = make_gate(lambda intent: [pending_for(intent, deadline_in_s=3600)], max_approval_wait_s=0.3)
    async with gate:
        decision = await asyncio.wait_for(gate.check(**REFUND), 2)
    assert decision.reasons[0].startswith("approval_expired")


async def test_fail_open_tool_runs_audited_when_governance_is_unavailable() -> None:
    gate, transport = make_gate(silent)
    ran = []

    @gate.guard(**REFUND, fail_open=True)
    async def refund() -> str:
        ran.append(True)
        return "done"

    async with gate:
        assert await refund() == "done"
    assert ran == [True]
    (audit,) = transport.audited()
    assert isinstance(audit, AuditRecord)
    assert audit.event_type is AuditEventType.FAIL_OPEN
    assert audit.intent is not None and audit.intent.request_id == audit.request_id
    assert audit.decision is not None and audit.decision.reasons[0].startswith(GOVERNANCE_UNAVAILABLE)
    (outcome,) = transport.outcomes()
    assert isinstance(outcome, ExecutionOutcome) and outcome.fail_open
    assert {(topic, key) for topic, key, _ in transport.emitted} == {
        (transport.topics.outcomes, audit.intent.agent_id)}


async def test_fail_open_does_not_override_a_policy_block() -> None:
    gate, transport = make_gate(block)

    @gate.guard(**REFUND, fail_open=True)
    async def refund() -> None:
        raise AssertionError("must not run")

    async with gate:
        with pytest.raises(ActionBlocked):
            await refund()
    assert transport.emitted == []


async def test_breaker_opens_after_consecutive_timeouts_and_stops_publishing() -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown=Backoff(initial_s=60, max_s=60, jitter=0))
    gate, transport = make_gate(silent, breaker=breaker)
    async with gate:
        for _ in range(2):
            await gate.check(**REFUND, timeout_s=0.02)
        loop = asyncio.get_running_loop()
        started = loop.time()
        decision = await gate.check(**REFUND)
        assert loop.time() - started < 0.05
    assert len(transport.sent) == 2
    assert decision.reasons[0].startswith(f"{GOVERNANCE_UNAVAILABLE}: circuit open")


async def test_breaker_probe_closes_it_when_the_processor_answers_again() -> None:
    clock = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, cooldown=Backoff(initial_s=5, max_s=5, jitter=0),
                             clock=lambda: clock[0], rng=random.Random(0))
    transport_responses: list[Responder] = [silent]
    gate, transport = make_gate(lambda intent: transport_responses[0](intent), breaker=breaker)
    async with gate:
        await gate.check(**REFUND, timeout_s=0.02)
        assert (await gate.check(**REFUND)).reasons[0].startswith(f"{GOVERNANCE_UNAVAILABLE}: circuit open")
        transport_responses[0] = allow
        clock[0] += 5
        assert (await gate.check(**REFUND)).decision is DecisionKind.ALLOW
        assert (await gate.check(**REFUND)).decision is DecisionKind.ALLOW
    assert len(transport.sent) == 3


async def test_stop_answers_waiting_calls_with_a_block() -> None:
    gate, _ = make_gate(silent)
    await gate.start()
    call = asyncio.create_task(gate.check(**REFUND, timeout_s=30))
    await asyncio.sleep(0)  # let the call register and publish
    await gate.stop()
    decision = await asyncio.wait_for(call, 1)
    assert decision.reasons[0] == f"{GOVERNANCE_UNAVAILABLE}: gate stopped"


def test_exception_hierarchy() -> None:
    blocked: list[type[Exception]] = [GovernanceUnavailable, ApprovalDenied, ApprovalExpired]
    assert all(issubclass(cls, ActionBlocked) for cls in blocked)
    assert all(issubclass(cls, SluicegateError) for cls in (ActionBlocked, InvalidIntent, GateNotStarted))
    assert issubclass(InvalidIntent, ValueError)


async def test_unreachable_broker_blocks_at_once_and_keeps_retrying_in_the_background() -> None:
    """A real KafkaTransport pointed at a closed port: start returns, checks fail closed fast."""
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", decision_timeout_s=0.5)
    gate = Gate(settings, agent_id="a", agent_role="r", environment="dev")
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with gate:
        assert not gate.connected
        decision = await gate.check(**REFUND)
        assert loop.time() - started < 0.5 + 0.5
    assert decision.reasons[0].startswith(f"{GOVERNANCE_UNAVAILABLE}: not connected to Kafka")
    assert "127.0.0.1" in decision.reasons[0]


async def test_a_final_decision_that_arrived_as_the_deadline_passed_is_the_answer_not_a_timeout() -> None:
    """The worker answered while the intent's publish was still being acknowledged: the answer sits in
    the call's queue when its deadline fires, and it is what the call returns (the worker decided it
    before the intent's wait_until; calling it unavailable would contradict the audit)."""

    class SlowAck(FakeTransport):
        async def send_intent(self, intent: Intent, value: bytes, headers: RecordHeaders = ()) -> None:
            reply = decision_for(intent).model_dump_json().encode()
            self.demux.feed(0, intent.agent_id.encode(), reply, ())
            await asyncio.sleep(1.0)  # the acknowledgement outlives the call's deadline

    transport = SlowAck()
    gate = Gate(Settings(kafka_bootstrap_servers="unused:1"), agent_id="sup-1", agent_role="support",
                environment="production", transport=transport)
    async with gate:
        decision = await gate.check(**REFUND, timeout_s=0.05)
    assert decision.decision is DecisionKind.ALLOW
    assert not any(r.startswith("governance_unavailable") for r in decision.reasons)
