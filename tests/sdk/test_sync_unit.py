"""The SyncGate facade over a scripted transport: blocking check/guard, async tools, thread hand-off."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from schemas import DecisionKind, ExecutionOutcome, Intent, OutcomeStatus
from sluicegate import ActionBlocked, GateNotStarted, GovernanceUnavailable, Settings, SyncGate
from tests.sdk.fakes import FakeTransport, Reply, decision_for

REFUND: dict[str, Any] = {"tool": "payments.refund", "action": "create", "target": "payments:refunds"}


def by_amount(intent: Intent) -> list[Reply]:
    amount = intent.params.get("amount", 0)
    assert isinstance(amount, int | float)
    kind = DecisionKind.ALLOW if amount <= 50 else DecisionKind.BLOCK
    return [decision_for(intent, kind, reasons=(f"amount {amount}",))]


def sync_gate(transport: FakeTransport) -> SyncGate:
    settings = Settings(kafka_bootstrap_servers="unused:1", decision_timeout_s=0.2)
    return SyncGate(settings, agent_id="fin-1", agent_role="finance", environment="production",
                    transport=transport)


def outcomes(transport: FakeTransport) -> list[ExecutionOutcome]:
    return transport.outcomes()


def test_sync_check_and_guard() -> None:
    transport = FakeTransport(by_amount)
    with sync_gate(transport) as gate:
        assert gate.check(**REFUND, params={"amount": 10}).decision is DecisionKind.ALLOW
        caller = threading.current_thread()
        ran_on = []

        @gate.guard(**REFUND, params=lambda amount: {"amount": amount})
        def refund(amount: int) -> int:
            ran_on.append(threading.current_thread())
            return amount

        assert refund(20) == 20
        with pytest.raises(ActionBlocked, match="amount 90"):
            refund(90)
        assert ran_on == [caller]
    assert [o.status for o in outcomes(transport)] == [OutcomeStatus.SUCCESS]
    assert transport.stopped


def test_sync_gate_guards_async_tools_too() -> None:
    transport = FakeTransport(by_amount)
    with sync_gate(transport) as gate:

        @gate.guard(**REFUND, params=lambda amount: {"amount": amount})
        async def refund(amount: int) -> int:
            await asyncio.sleep(0)
            return amount

        assert asyncio.run(refund(5)) == 5
    assert len(outcomes(transport)) == 1


def test_sync_fail_open_runs_and_is_audited() -> None:
    transport = FakeTransport(lambda intent: ())
    with sync_gate(transport) as gate:

        @gate.guard(**REFUND, fail_open=True)
        def refund() -> str:
            return "ran"

        @gate.guard(**REFUND)
        def strict_refund() -> str:
            return "ran"

        assert refund() == "ran"
        with pytest.raises(GovernanceUnavailable):
            strict_refund()
    assert len(transport.audited()) == 1
    assert [o.fail_open for o in outcomes(transport)] == [True]


def test_sync_gate_must_be_started() -> None:
    gate = sync_gate(FakeTransport(by_amount))
    with pytest.raises(GateNotStarted):
        gate.check(**REFUND)
    gate.stop()  # stopping a gate that never started is harmless
