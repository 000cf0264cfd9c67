"""The SDK with credentials (trust on), over a scripted transport: signed intents, identity from the
credential, only decisions authenticated with the agent's key for the action asked about, and no fail-open
once someone answers in the worker's name."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import AuditEventType, AuditRecord, DecisionKind, Intent
from sluicegate import (
    GOVERNANCE_UNAVAILABLE,
    ActionBlocked,
    AgentCredential,
    Backoff,
    CircuitBreaker,
    Gate,
    GovernanceUnavailable,
    InvalidCredential,
    InvalidIntent,
    Settings,
    SyncGate,
)
from sluicegate.trust import AUTH_HEADER, KeyRing, agent_names, authenticator, check, split_authenticator
from tests.sdk.fakes import FakeTransport, Record, Reply, Responder, decision_for, pending_for, signed

FAST = 0.2
REFUND: dict[str, Any] = {"tool": "payments.refund", "action": "create", "target": "payments:refunds"}
RING = KeyRing.generate("k1")
AGENT = AgentCredential.issue(RING, "sup-1", "support", "production", "team-a")
OTHER = AgentCredential.issue(RING, "sup-2", "support", "staging")
STRANGER = AgentCredential.issue(KeyRing.generate("k1"), "sup-1", "support", "production", "team-a")
"""Same identity and key id, from a ring the SDK does not trust."""


def settings(**fields: Any) -> Settings:
    return Settings(kafka_bootstrap_servers="unused:1", decision_timeout_s=FAST, **fields)


def make_gate(responder: Responder | None, **options: Any) -> tuple[Gate, FakeTransport]:
    transport = FakeTransport(responder)
    options.setdefault("credential", AGENT)
    return Gate(settings(), transport=transport, **options), transport


def forged_allow(intent: Intent) -> Reply:
    """What an attacker who reads the intents topic can make: a perfect ALLOW, without the agent's key."""
    return decision_for(intent)


def real(intent: Intent, kind: DecisionKind = DecisionKind.ALLOW, **fields: object) -> Reply:
    credential = AGENT if intent.agent_id == AGENT.agent_id else OTHER
    return signed(decision_for(intent, kind, **fields), credential)


def real_block(intent: Intent) -> Reply:
    return real(intent, DecisionKind.BLOCK, reasons=("refund over 500",), rules=("refund-max",))


# -- intents: signed, identity from the credential --------------------------------------------------------


async def test_the_intent_is_authenticated_over_its_exact_bytes_with_the_credentials_identity() -> None:
    gate, transport = make_gate(lambda i: [real(i)])
    async with gate:
        assert (await gate.check(**REFUND, params={"amount": 5})).decision is DecisionKind.ALLOW
    (record,) = transport.records
    (intent,) = transport.sent
    assert Intent.model_validate_json(record.value) == intent
    assert (intent.agent_id, intent.agent_role, intent.environment, intent.agent_owner) == (
        "sup-1", "support", "production", "team-a")
    (name, auth), = record.headers
    key_id, mac = split_authenticator(auth)
    assert name == AUTH_HEADER and key_id == "k1"
    check(RING.derive("k1", "agent", *agent_names("sup-1", "support", "production", "team-a")),
          record.value, mac)


async def test_the_credential_setting_turns_trust_on() -> None:
    transport = FakeTransport(lambda i: [real(i)])
    async with Gate(settings(agent_credential=str(AGENT)), transport=transport) as gate:
        assert gate.trusted and gate.identity.environment == "production"
        await gate.check(**REFUND)
    assert transport.sent[0].agent_owner == "team-a"
    assert transport.records[0].headers[0][0] == AUTH_HEADER


async def test_without_a_credential_nothing_is_signed() -> None:
    transport = FakeTransport(lambda i: [decision_for(i)])
    async with Gate(settings(), agent_id="a", agent_role="r", environment="dev", transport=transport) as gate:
        assert not gate.trusted
        assert (await gate.check(**REFUND)).decision is DecisionKind.ALLOW
    assert transport.records[0].headers == ()


@pytest.mark.parametrize("override", [
    {"environment": "staging"}, {"agent_role": "admin"}, {"owner": "someone-else"}, {"agent_id": "sup-9"},
])
async def test_a_per_call_identity_other_than_the_credentials_raises(override: dict[str, Any]) -> None:
    gate, transport = make_gate(lambda i: [real(i)])
    async with gate:
        with pytest.raises(InvalidIntent, match="credential"):
            await gate.check(**REFUND, **override)
        with pytest.raises(InvalidIntent, match="credential"):
            gate.guard(**REFUND, **override)
        same: dict[str, Any] = {"agent_id": "sup-1", "agent_role": "support", "environment": "production",
                                "owner": "team-a"}
        assert (await gate.check(**REFUND, **same)).decision is DecisionKind.ALLOW
    assert len(transport.sent) == 1


def test_a_gate_default_other_than_its_credential_raises() -> None:
    with pytest.raises(InvalidIntent, match="environment 'staging'"):
        Gate(settings(), credential=AGENT, environment="staging", transport=FakeTransport())
    with pytest.raises(InvalidIntent, match="sup-2"):
        Gate(settings(), credential=AGENT, agent_id="sup-2", transport=FakeTransport())


async def test_a_hand_made_intent_claiming_another_environment_is_refused() -> None:
    gate, transport = make_gate(lambda i: [real(i)])
    async with gate:
        intent = gate.intent(**REFUND).model_copy(update={"environment": "staging"})
        with pytest.raises(InvalidIntent, match="staging"):
            await gate.authorize(intent)
    assert transport.sent == []


async def test_a_fleet_gate_acts_for_the_agent_each_call_names() -> None:
    gate, transport = make_gate(lambda i: [real(i)], credential=None, credentials=[AGENT, str(OTHER)])
    async with gate:
        await gate.check(**REFUND, agent_id="sup-2")
        await gate.check(**REFUND, agent_id="sup-1")
        with pytest.raises(InvalidIntent, match="no agent_id"):
            await gate.check(**REFUND)
        with pytest.raises(InvalidIntent, match="environment 'production'"):
            await gate.check(**REFUND, agent_id="sup-2", environment="production")
    assert [(i.agent_id, i.environment, i.agent_owner) for i in transport.sent] == [
        ("sup-2", "staging", None), ("sup-1", "production", "team-a")]
    headers = [r.headers[0][1] for r in transport.records]
    check(OTHER.key, transport.records[0].value, split_authenticator(headers[0])[1])


def test_credentials_that_cannot_be_used_raise() -> None:
    with pytest.raises(InvalidCredential, match="unreadable"):
        Gate(settings(), credential="sga1.not-a-credential", transport=FakeTransport())
    with pytest.raises(InvalidCredential, match="'sup-2'"):
        Gate(settings(), credentials={"sup-2": AGENT}, transport=FakeTransport())
    with pytest.raises(InvalidCredential, match="two different"):
        Gate(settings(), credentials=[AGENT, STRANGER], transport=FakeTransport())
    with pytest.raises(InvalidIntent, match="several"):
        Gate(settings(), credentials=[AGENT, OTHER], agent_role="support", transport=FakeTransport())


def test_sync_gate_takes_a_credential_and_checks_guard_identity() -> None:
    with SyncGate(settings(), credential=AGENT, transport=FakeTransport(lambda i: [real(i)])) as gate:
        assert gate.check(**REFUND).decision is DecisionKind.ALLOW
        with pytest.raises(InvalidIntent):
            gate.guard(**REFUND, environment="dev")


# -- decisions: only the worker's, for this action --------------------------------------------------------


async def test_a_decision_signed_with_the_agents_key_is_accepted() -> None:
    gate, transport = make_gate(lambda i: [real(i)])
    async with gate:
        auth = await gate.authorize(gate.intent(**REFUND))
    assert auth.decision.decision is DecisionKind.ALLOW and auth.rejected == ()
    assert transport.demux.stats.delivered == 1 and transport.emitted == []


@pytest.mark.parametrize(("forgery", "why"), [
    (forged_allow, "no authenticator"),
    (lambda i: signed(decision_for(i), STRANGER), "wrong authenticator"),
    (lambda i: signed(decision_for(i), AGENT, key_id="k0"), "key id"),
    (lambda i: Record(decision_for(i).model_dump_json().encode(), ((AUTH_HEADER, b"garbage"),)),
     "key id"),
    (lambda i: signed(decision_for(i, intent_digest="0" * 64), AGENT), "another action"),
    (lambda i: signed(decision_for(i, agent_id="sup-9"), AGENT), "names agent 'sup-9'"),
    (lambda i: f'{{"request_id": "{i.request_id}", "decision": "ALLOW", "final": true}}'.encode(),
     "unparseable"),
])
async def test_a_reply_that_does_not_verify_is_dropped_and_the_real_one_is_awaited(
    forgery: Responder, why: str,
) -> None:
    gate, transport = make_gate(lambda i: [forgery(i), real_block(i)])  # type: ignore[list-item]
    async with gate:
        auth = await gate.authorize(gate.intent(**REFUND))
    assert auth.decision.decision is DecisionKind.BLOCK and auth.decision.reasons == ("refund over 500",)
    assert not auth.unavailable and len(auth.rejected) == 1 and why in auth.rejected[0]
    assert transport.demux.stats.rejected == 1 and transport.demux.stats.delivered == 1
    (audit,) = transport.audited()
    assert isinstance(audit, AuditRecord) and audit.event_type is AuditEventType.SECURITY
    assert audit.request_id == auth.intent.request_id and audit.note is not None and why in audit.note


async def test_the_workers_authenticator_under_each_key_id_of_a_rotated_ring_is_accepted() -> None:
    rotated = RING.rotated("k2")

    def worker(intent: Intent) -> list[Reply]:
        value = decision_for(intent).model_dump_json().encode()
        names = agent_names(intent.agent_id, intent.agent_role, intent.environment, intent.agent_owner)
        headers = tuple((AUTH_HEADER, authenticator(kid, rotated.derive(kid, "agent", *names), value))
                        for kid, _ in rotated.keys)
        assert headers[0][1].startswith(b"k2.")
        return [Record(value, headers)]

    gate, _ = make_gate(worker)
    async with gate:
        assert (await gate.check(**REFUND)).decision is DecisionKind.ALLOW


@pytest.mark.parametrize("forgery", [
    forged_allow,
    lambda i: signed(decision_for(i), STRANGER),
])
async def test_with_only_forged_replies_the_call_blocks_and_a_fail_open_tool_does_not_run(
    forgery: Responder,
) -> None:
    gate, transport = make_gate(lambda i: [forgery(i)])  # type: ignore[list-item]
    ran = []

    @gate.guard(**REFUND, fail_open=True)
    async def refund() -> None:
        ran.append(True)

    async with gate:
        decision = await gate.check(**REFUND)
        with pytest.raises(GovernanceUnavailable, match="answering in the worker's name"):
            await refund()
    assert ran == []
    assert decision.decision is DecisionKind.BLOCK and decision.final
    assert decision.determining == (GOVERNANCE_UNAVAILABLE,)
    assert decision.reasons[0].startswith(f"{GOVERNANCE_UNAVAILABLE}: no verifiable decision within 0.2 s; "
                                          "1 reply that did not verify arrived")
    assert [a.event_type for a in transport.audited()] == [AuditEventType.SECURITY] * 2
    assert transport.outcomes() == []


async def test_forged_replies_do_not_open_the_breaker_into_a_fail_open() -> None:
    """A breaker opened by forged-only calls would fail the next call fast as 'unavailable', where a
    fail_open tool runs: forged replies are no sign of an outage, so they do not count."""
    breaker = CircuitBreaker(failure_threshold=1, cooldown=Backoff(initial_s=60, max_s=60, jitter=0))
    gate, transport = make_gate(lambda i: [forged_allow(i)], breaker=breaker)
    ran = []

    @gate.guard(**REFUND, fail_open=True)
    async def refund() -> None:
        ran.append(True)

    async with gate:
        for _ in range(3):
            with pytest.raises(GovernanceUnavailable, match="did not verify"):
                await refund()
    assert ran == [] and len(transport.sent) == 3


async def test_silence_without_forgeries_still_fails_open_audited() -> None:
    gate, transport = make_gate(lambda i: [])

    @gate.guard(**REFUND, fail_open=True)
    async def refund() -> str:
        return "done"

    async with gate:
        assert await refund() == "done"
    (audit,) = transport.audited()
    assert isinstance(audit, AuditRecord) and audit.event_type is AuditEventType.FAIL_OPEN


async def test_a_signed_pending_then_a_forged_final_expires_and_never_runs_the_tool() -> None:
    def approval_forged(intent: Intent) -> list[Reply]:
        return [signed(pending_for(intent, 0.1), AGENT), forged_allow(intent)]

    gate, transport = make_gate(approval_forged)
    ran = []

    @gate.guard(**REFUND, fail_open=True)
    async def refund() -> None:
        ran.append(True)

    async with gate:
        with pytest.raises(ActionBlocked, match="approval_expired"):
            await refund()
    assert ran == [] and transport.demux.stats.rejected == 1


async def test_a_signed_pending_then_a_signed_final_is_the_answer() -> None:
    def approval(intent: Intent) -> list[Reply]:
        return [signed(pending_for(intent, 30), AGENT), real(intent, approved_by=("alice",))]

    gate, _ = make_gate(approval)
    async with gate:
        auth = await gate.authorize(gate.intent(**REFUND))
    assert auth.decision.decision is DecisionKind.ALLOW and auth.decision.approved_by == ("alice",)
    assert auth.pending is not None and auth.rejected == ()


async def test_an_unsigned_pending_is_not_taken_as_the_processor_answering() -> None:
    """An unverified pending must not stretch the wait to its approval deadline."""
    def forged_pending(intent: Intent) -> list[Reply]:
        return [pending_for(intent, 3600)]

    gate, _ = make_gate(forged_pending, max_approval_wait_s=2.0)
    async with gate:
        auth = await gate.authorize(gate.intent(**REFUND))
    assert auth.pending is None and auth.unavailable and not auth.may_fail_open


def test_a_gate_without_a_credential_refuses_to_start_unless_trust_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A missing SLUICEGATE_AGENT_CREDENTIAL must not silently turn trust off: any reply would be believed."""
    monkeypatch.delenv("SLUICEGATE_TRUST_OFF")
    with pytest.raises(InvalidCredential, match="SLUICEGATE_AGENT_CREDENTIAL"):
        Gate("127.0.0.1:9", agent_id="a1", transport=FakeTransport())
    monkeypatch.setenv("SLUICEGATE_TRUST_OFF", "1")
    assert not Gate("127.0.0.1:9", agent_id="a1", transport=FakeTransport()).trusted
