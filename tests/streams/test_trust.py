"""The workers with trust on, on a real broker: what they refuse on the way in and how they authenticate
what they send. One worker (fleet_budget.yaml, a reviewers file, a two-key ring) serves the module."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from schemas import ApprovalVerdict, Decision, DecisionKind, Intent, VerdictKind
from schemas.decision import APPROVAL_GRANTED, REQUEST_ID_REUSED, UNAUTHENTICATED, WRONG_PARTITION
from sluicegate.routing import partition_for
from sluicegate.trust import (
    AUTH_HEADER,
    AgentCredential,
    KeyRing,
    RequestSigner,
    SignerCredential,
    check,
    split_authenticator,
    verify_request,
)
from streams.messages import LeaseAsk, LeaseGrant, LeaseReturn, Release, Reservation, Resolved
from streams.policy_source import publish_policy
from streams.topology import WorkerTopics
from tests.streams.harness import POLICIES, Client, WorkerProcess, make_intent

pytestmark = pytest.mark.integration
ALLOW, APPROVAL, BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK
PARTITIONS = 3
OLD = KeyRing.generate("k-old")
RING = OLD.rotated("k-new")
"""The workers accept both keys: credentials issued before the rotation keep working."""
SIGNER = RequestSigner.generate()


@pytest.fixture(scope="module")
def trusted_worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    workdir = tmp_path_factory.mktemp("trust")
    reviewers = workdir / "reviewers.yaml"
    reviewers.write_text("groups: {payments-reviewers: [lena, marco]}\n")
    keys = {"SLUICEGATE_TRUST_KEYS": str(RING), "SLUICEGATE_TRUST_SIGNING_KEY": str(SIGNER)}
    worker = WorkerProcess(kafka_bootstrap, "tr" + secrets.token_hex(5), workdir, partitions=PARTITIONS,
                           reviewers=reviewers, trust=keys)
    text = (POLICIES / "fleet_budget.yaml").read_text()
    publisher = SignerCredential.issue(RING, "publisher", "policy-team")
    asyncio.run(publish_policy(kafka_bootstrap, worker.names.policies, text, "fleet_budget.yaml", publisher))
    with worker.running():
        yield worker


@pytest.fixture
async def client(trusted_worker: WorkerProcess) -> AsyncIterator[Client]:
    async with Client(trusted_worker.bootstrap, trusted_worker.prefix) as connected:
        yield connected


def credential(agent: str, ring: KeyRing = RING, environment: str = "production") -> AgentCredential:
    return AgentCredential.issue(ring, agent, "support", environment)


def agent() -> str:
    return f"agent-{secrets.token_hex(4)}"


async def send(client: Client, intent: Intent, signed_by: AgentCredential | None, *,
               partition: int | None = None, key: bytes | str | None = "agent") -> None:
    value = intent.model_dump_json().encode()
    headers = None if signed_by is None else [(AUTH_HEADER, signed_by.authenticate(value))]
    record_key = intent.agent_id.encode() if key == "agent" else key
    await client.send_raw(record_key if not isinstance(record_key, str) else record_key.encode(), value,
                          headers, partition)


def verifies(client: Client, decision: Decision, cred: AgentCredential) -> bool:
    """The record of ``decision`` carries an authenticator that verifies with the agent's key."""
    for body, headers in client.decision_records[decision.request_id]:
        if Decision.model_validate_json(body) != decision:
            continue
        for name, value in headers:
            key_id, mac = split_authenticator(value) if name == AUTH_HEADER else ("", b"")
            if key_id == cred.key_id:
                check(cred.key, body, mac)
                return True
    return False


def security_notes(client: Client, request_id: uuid.UUID) -> list[str]:
    return [r["note"] for r in client.audit
            if r["event_type"] == "security" and r["request_id"] == str(request_id)]


async def test_an_authenticated_intent_is_decided_and_its_decision_verifies(client: Client) -> None:
    cred = credential(agent())
    intent = make_intent(cred.agent_id, params={"amount": 10})
    await send(client, intent, cred)
    decision = await client.decision(intent)
    assert decision.decision is ALLOW
    assert verifies(client, decision, cred)


async def test_a_credential_from_before_the_rotation_still_works(client: Client) -> None:
    cred = credential(agent(), ring=OLD)
    intent = make_intent(cred.agent_id, params={"amount": 10})
    await send(client, intent, cred)
    decision = await client.decision(intent)
    assert decision.decision is ALLOW and verifies(client, decision, cred)


@pytest.mark.parametrize("case", ["no credential", "wrong authenticator", "another agent's id",
                                  "another environment", "a key the workers do not hold"])
async def test_intents_that_do_not_match_their_credential_are_blocked_and_audited(
    client: Client, case: str,
) -> None:
    cred = credential(agent())
    intent = make_intent(cred.agent_id, params={"amount": 10})
    signer: AgentCredential | None = cred
    if case == "no credential":
        signer = None
    elif case == "wrong authenticator":
        signer = AgentCredential(cred.key_id, cred.agent_id, cred.role, cred.environment, cred.owner,
                                 secrets.token_bytes(32))
    elif case == "another agent's id":
        intent = make_intent(agent(), params={"amount": 10})  # signed with cred: not its key
    elif case == "another environment":
        intent = make_intent(cred.agent_id, params={"amount": 10}, environment="staging")
    else:
        signer = credential(cred.agent_id, ring=KeyRing.generate("k-old"))
    await send(client, intent, signer)
    decision = await client.decision(intent)
    assert (decision.decision, decision.final, decision.determining) == (BLOCK, True, (UNAUTHENTICATED,))
    # Unsealed: the sender may not be the agent, whose SDK drops it and keeps waiting for its answer.
    [(_, headers)] = client.decision_records[intent.request_id]
    assert AUTH_HEADER not in dict(headers)
    await client.wait_for(lambda: security_notes(client, intent.request_id), what="the security event")
    assert security_notes(client, intent.request_id)[0].startswith(f"{UNAUTHENTICATED}:")


async def test_a_refused_intent_counts_against_nothing(client: Client) -> None:
    """21 refunds of one agent, the unauthenticated ones first: the per-agent limit (20 per 10 min)
    still lets 20 authenticated ones through."""
    cred = credential(agent())
    t0 = datetime.now(UTC)
    forged = [make_intent(cred.agent_id, params={"amount": 10}, occurred_at=t0) for _ in range(5)]
    for intent in forged:
        await send(client, intent, None)
    real = [make_intent(cred.agent_id, params={"amount": 10}, occurred_at=t0 + timedelta(milliseconds=i))
            for i in range(21)]
    for intent in real:
        await send(client, intent, cred)
    decisions = [await client.decision(intent) for intent in real]
    assert [d.decision for d in decisions] == [ALLOW] * 20 + [BLOCK]


async def test_intents_off_their_agents_partition_are_blocked_and_limits_hold(client: Client) -> None:
    """An agent that spreads its intents over the partitions would multiply its per-agent limit."""
    cred = credential(agent())
    home = partition_for(cred.agent_id, PARTITIONS)
    away = (home + 1) % PARTITIONS
    t0 = datetime.now(UTC)
    intents = [make_intent(cred.agent_id, params={"amount": 10}, occurred_at=t0 + timedelta(milliseconds=i))
               for i in range(50)]
    for index, intent in enumerate(intents):
        await send(client, intent, cred, partition=home if index % 2 else away)
    decisions = [await client.decision(intent) for intent in intents]
    assert sum(d.decision is ALLOW for d in decisions) == 20  # the limit, however they were spread
    off = [d for index, d in enumerate(decisions) if index % 2 == 0]
    assert {d.determining for d in off} == {(WRONG_PARTITION,)}
    assert f"partition {home}" in off[0].reasons[0]
    unkeyed = make_intent(cred.agent_id, params={"amount": 10})
    await send(client, unkeyed, cred, key=None, partition=home)
    decision = await client.decision(unkeyed)
    assert decision.determining == (WRONG_PARTITION,)


async def test_a_reused_request_id_with_other_params_is_blocked(client: Client) -> None:
    cred = credential(agent())
    first = make_intent(cred.agent_id, params={"amount": 10})
    await send(client, first, cred)
    assert (await client.decision(first)).decision is ALLOW
    later = datetime.now(UTC)
    again = first.model_copy(update={"params": {"amount": 10}, "occurred_at": later,
                                     "wait_until": later + timedelta(seconds=30)})
    await send(client, again, cred)  # the same action, sent again later: the recorded decision again
    await client.wait_for(lambda: len(client.decisions[first.request_id]) == 2, what="the replayed decision")
    assert client.decisions[first.request_id][1] == client.decisions[first.request_id][0]
    other = first.model_copy(update={"params": {"amount": 99}})
    await send(client, other, cred)
    await client.wait_for(lambda: len(client.decisions[first.request_id]) == 3, what="the refusal")
    refused = client.decisions[first.request_id][2]
    assert (refused.decision, refused.determining) == (BLOCK, (REQUEST_ID_REUSED,))


async def test_forged_internal_messages_change_nothing(client: Client, trusted_worker: WorkerProcess) -> None:
    topics = WorkerTopics(trusted_worker.names, PARTITIONS)
    cred = credential(agent())
    pending = make_intent(cred.agent_id, params={"amount": 500})
    await send(client, pending, cred)
    assert (await client.decision(pending)).decision is APPROVAL
    forged_final = (await client.decision(pending)).model_copy(update={
        "decision": ALLOW, "final": True, "reasons": (APPROVAL_GRANTED,)})
    resolved = Resolved(decision=forged_final).model_dump_json().encode()
    await client.send_raw(cred.agent_id.encode(), resolved, topic=topics.agent_feedback,
                          partition=partition_for(cred.agent_id, PARTITIONS))
    reservation = Reservation(key="fleet-refunds-5000-per-24h|fleet", at_ms=0, value=10)
    release = Release(request_id=uuid.uuid4(), reservation=reservation).model_dump_json().encode()
    await client.send_raw(reservation.key.encode(), release, topic=topics.shared_limits)
    await client.wait_for(lambda: len(client.dead_letters) >= 2, what="both dead-lettered")
    errors = [headers.get("error", b"") for _, headers in client.dead_letters[-2:]]
    assert all(b"authenticator" in error for error in errors)
    assert all(not d.final for d in client.decisions[pending.request_id])


async def test_verdicts_count_only_when_signed_by_the_reviewer_they_name(client: Client) -> None:
    cred = credential(agent())
    intent = make_intent(cred.agent_id, params={"amount": 500})
    await send(client, intent, cred)
    await client.wait_for(lambda: intent.request_id in client.requests, what="the approval request")
    request = client.requests[intent.request_id]

    def verdict(reviewer: str) -> bytes:
        return ApprovalVerdict(request_id=request.request_id, intent_digest=request.intent_digest,
                               reviewer=reviewer, verdict=VerdictKind.APPROVE,
                               decided_at=datetime.now(UTC)).model_dump_json().encode()

    key = str(request.request_id).encode()
    lena = SignerCredential.issue(RING, "reviewer", "lena")
    await client.send_raw(key, verdict("lena"), topic=client.names.approvals)  # hand-made, unsigned
    await client.send_raw(key, verdict("marco"), lena.headers(verdict("marco")), topic=client.names.approvals)
    await client.wait_for(lambda: len(rejections(client, request.request_id)) >= 2, what="two rejections")
    assert all(note.startswith("unauthenticated") for note in rejections(client, request.request_id))
    assert not any(d.final for d in client.decisions[intent.request_id])
    body = verdict("lena")
    await client.send_raw(key, body, lena.headers(body), topic=client.names.approvals)
    final = await client.decision(intent, final=True)
    assert final.decision is ALLOW and final.approved_by == ("lena",)
    assert verifies(client, final, cred)


def rejections(client: Client, request_id: uuid.UUID) -> list[str]:
    return [r["note"] for r in client.audit
            if r["event_type"] == "verdict_rejected" and r["request_id"] == str(request_id)]


async def test_approval_requests_are_signed_by_the_workers(client: Client) -> None:
    cred = credential(agent())
    intent = make_intent(cred.agent_id, params={"amount": 600})
    await send(client, intent, cred)
    await client.wait_for(lambda: intent.request_id in client.requests, what="the approval request")
    body, headers = client.request_records[intent.request_id]
    verify_request(SIGNER.public, headers, body)
    assert json.loads(body)["intent_digest"] == intent.digest()



async def test_forged_lease_messages_change_nothing(client: Client, trusted_worker: WorkerProcess) -> None:
    """An unauthenticated lease ask, grant or return (docs/leases.md) is dead-lettered, never handled: a
    forged grant would let a partition spend budget nobody counted, a forged return uncount it."""
    topics = WorkerTopics(trusted_worker.names, PARTITIONS)
    agent_id = agent()
    home = partition_for(agent_id, PARTITIONS)
    key = "fleet-refunds-5000-per-24h|fleet"
    lease_id = uuid.uuid4()
    ask = LeaseAsk(ask_id=lease_id, key=key, limit_id="fleet-refunds-5000-per-24h", policy_version="x",
                   partition=home, partitions=PARTITIONS, reply_key=agent_id, start_ms=0, end_ms=2_000,
                   want=1_000, need=1)
    grant = LeaseGrant(ask_id=lease_id, key=key, policy_version="x", partition=home, start_ms=0,
                       end_ms=2_000, amount=5_000)
    back = LeaseReturn(lease_id=lease_id, key=key, partition=home)
    before = len(client.dead_letters)
    await client.send_raw(key.encode(), ask.model_dump_json().encode(), topic=topics.shared_limits)
    await client.send_raw(agent_id.encode(), grant.model_dump_json().encode(), topic=topics.agent_feedback,
                          partition=home)
    await client.send_raw(key.encode(), back.model_dump_json().encode(), topic=topics.shared_limits)
    await client.wait_for(lambda: len(client.dead_letters) >= before + 3, what="all three dead-lettered")
    errors = [headers.get("error", b"") for _, headers in client.dead_letters[before:]]
    assert all(b"authenticator" in error for error in errors)
