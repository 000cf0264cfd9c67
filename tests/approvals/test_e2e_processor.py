"""Approvals end to end on a real broker: an agent's ``guard`` -> worker -> reviewers -> the tool runs.

One worker subprocess (policy below, reviewers file) serves the module; each test uses its own agents.
The restart test runs last: it kills and restarts the module's worker.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consumers.slack_blocks import ACTION_APPROVE
from consumers.slack_bot import SlackApprovalBot
from schemas import ApprovalRequest, ApprovalVerdict, Decision, DecisionKind, TopicNames, VerdictKind
from schemas.decision import APPROVAL_EXPIRED, APPROVAL_GRANTED
from sluicegate import Gate
from sluicegate.cli.review import Reviewer, ReviewTrust, submit_verdict
from sluicegate.errors import ActionBlocked, ApprovalDenied
from sluicegate.settings import Settings
from sluicegate.trust import AgentCredential, SignerCredential
from streams.policy_source import publish_policy
from streams.stages.approval import UNKNOWN_REQUEST
from tests.approvals.conftest import bot_config, trusting
from tests.approvals.factories import WorkerKeys
from tests.approvals.kafka_util import produce
from tests.approvals.slack_fake import FakeSlackApi
from tests.approvals.test_slack_bot import click
from tests.streams.harness import Client, WorkerProcess, make_intent

pytestmark = pytest.mark.integration
KEYS = WorkerKeys()
"""The deployment's keys: the worker runs with trust on."""
ALLOW, APPROVAL, BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK
OWNER = "team-a"
REVIEWERS = """
groups:
  payments-reviewers: [alice, bob, dave]
  team-a: [dave, erin]
bots:
  slack-bot: [alice, bob]
"""
POLICY = """
policy: approvals_e2e
default: BLOCK
rules:
  - {id: small-refund, match: {tool: payments.refund}, when: {field: params.amount, op: lte, value: 100},
     decision: ALLOW}
  - id: refund-review
    match: {tool: payments.refund}
    when: {field: params.amount, op: gt, value: 100}
    decision: REQUIRE_APPROVAL
    approval: {group: payments-reviewers, timeout: 10m, channel: "#payments"}
  - id: payout-two-reviewers
    match: {tool: payments.payout}
    decision: REQUIRE_APPROVAL
    approval: {group: payments-reviewers, quorum: 2, timeout: 10m}
  - id: wire-quick-review
    match: {tool: bank.wire}
    decision: REQUIRE_APPROVAL
    approval: {group: payments-reviewers, timeout: 3s}
  - id: export-review
    match: {tool: data.export}
    decision: REQUIRE_APPROVAL
    approval: {group: payments-reviewers, timeout: 10m}
limits:
  - {id: refunds-per-agent, match: {tool: payments.refund}, key: agent, window: 1h, count: 2, decision: BLOCK}
  - {id: one-export-per-fleet, match: {tool: data.export}, key: fleet, window: 1h, count: 1, decision: BLOCK}
"""


@pytest.fixture(scope="module")
def approval_worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    workdir = tmp_path_factory.mktemp("approvals-e2e")
    reviewers = workdir / "reviewers.yaml"
    reviewers.write_text(REVIEWERS)
    trust = {"SLUICEGATE_TRUST_KEYS": str(KEYS.ring), "SLUICEGATE_TRUST_SIGNING_KEY": str(KEYS.signer)}
    worker = WorkerProcess(kafka_bootstrap, "ap" + secrets.token_hex(5), workdir, reviewers=reviewers,
                           trust=trust)
    publisher = SignerCredential.issue(KEYS.ring, "publisher", "policy-team")
    asyncio.run(publish_policy(kafka_bootstrap, worker.names.policies, POLICY, "approvals_e2e.yaml",
                               publisher))
    with worker.running():
        yield worker


@pytest.fixture
async def client(approval_worker: WorkerProcess) -> AsyncIterator[Client]:
    async with Client(approval_worker.bootstrap, approval_worker.prefix, KEYS.ring) as result:
        yield result


@pytest.fixture
async def gate(approval_worker: WorkerProcess) -> AsyncIterator[Gate]:
    worker = approval_worker
    settings = Settings(kafka_bootstrap_servers=worker.bootstrap, topic_prefix=worker.prefix,
                        decision_timeout_s=30)
    credential = AgentCredential.issue(KEYS.ring, agent("sdk"), "support", "production", OWNER)
    async with Gate(settings, credential=credential) as result:
        yield result


def agent(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


async def request_for(client: Client, agent_id: str, tool: str | None = None) -> ApprovalRequest:
    """The approval request the worker published for ``agent_id`` (and ``tool``)."""
    def found() -> ApprovalRequest | None:
        return next((r for r in client.requests.values()
                     if r.intent.agent_id == agent_id and tool in (None, r.intent.tool)), None)
    await client.wait_for(lambda: found() is not None, what=f"approval request of {agent_id}")
    request = found()
    assert request is not None
    return request


def audits(client: Client, request_id: uuid.UUID, kind: str) -> list[dict[str, Any]]:
    return [r for r in client.audit if r["request_id"] == str(request_id) and r["event_type"] == kind]


async def rejected(client: Client, request_id: uuid.UUID, count: int) -> list[str]:
    """The notes of the first ``count`` rejected verdicts of a request, waiting for them."""
    await client.wait_for(lambda: len(audits(client, request_id, "verdict_rejected")) >= count,
                          what=f"{count} rejected verdicts of {request_id}")
    return [r["note"] for r in audits(client, request_id, "verdict_rejected")]


async def cli_verdict(worker: WorkerProcess, request: ApprovalRequest, reviewer: str,
                      kind: VerdictKind = VerdictKind.APPROVE, reason: str | None = None) -> ApprovalVerdict:
    return await submit_verdict(worker.bootstrap, worker.names, str(request.request_id),
                                reviewer=Reviewer(reviewer, KEYS.reviewer(reviewer)), verdict=kind,
                                reason=reason, now=datetime.now(UTC), trust=ReviewTrust(KEYS.public))


async def raw_verdict(worker: WorkerProcess, request: ApprovalRequest, reviewer: str,
                      signer: SignerCredential | str | None = "named", **extra: Any) -> None:
    """A verdict straight onto the approvals topic (the CLI refuses what the processor must reject),
    signed by the reviewer it names unless ``signer`` says otherwise (None: unsigned)."""
    fields: dict[str, Any] = {"request_id": request.request_id, "intent_digest": request.intent_digest,
                              "reviewer": reviewer, "verdict": VerdictKind.APPROVE,
                              "decided_at": datetime.now(UTC), "source": "api"}
    verdict = ApprovalVerdict(**(fields | extra))
    credential = KEYS.reviewer(reviewer) if signer == "named" else signer
    headers = None if not isinstance(credential, SignerCredential) else credential.headers(
        verdict.model_dump_json().encode())
    await produce(worker.bootstrap, worker.names.approvals, str(verdict.request_id), verdict, headers=headers)


async def pending_intent(client: Client, tool: str, amount: float = 500) -> tuple[Decision, ApprovalRequest]:
    intent = make_intent(agent("raw"), tool=tool, params={"amount": amount}, agent_owner=OWNER)
    pending = await client.decide(intent)
    assert (pending.decision, pending.final) == (APPROVAL, False)
    return pending, await request_for(client, intent.agent_id)


def refund_tool(gate: Gate, ran: list[float]) -> Any:
    @gate.guard(tool="payments.refund", action="create", target="payments:refunds",
                params=lambda amount: {"amount": amount})
    async def refund(amount: float) -> str:
        ran.append(amount)
        return f"refunded {amount}"

    return refund


async def test_guard_runs_the_tool_on_allow_and_raises_on_block(gate: Gate) -> None:
    """ALLOW and BLOCK through ``guard`` and the real worker: the third refund in an hour hits the limit."""
    ran: list[float] = []
    refund = refund_tool(gate, ran)
    assert await refund(20) == "refunded 20"
    assert await refund(30) == "refunded 30"
    with pytest.raises(ActionBlocked) as raised:
        await refund(40)
    assert ran == [20, 30]  # the blocked call never ran
    assert raised.value.decision.decision is BLOCK
    assert raised.value.rules == ("small-refund", "refunds-per-agent")
    assert not isinstance(raised.value, ApprovalDenied)


async def test_guard_waits_for_a_cli_approval_then_the_tool_runs(
    gate: Gate, client: Client, approval_worker: WorkerProcess,
) -> None:
    ran: list[float] = []
    call = asyncio.create_task(refund_tool(gate, ran)(500))
    request = await request_for(client, gate.identity.agent_id or "")
    assert (request.approver_group, request.quorum, request.channel) == ("payments-reviewers", 1, "#payments")
    assert not ran and not call.done()
    await cli_verdict(approval_worker, request, "alice")
    assert await asyncio.wait_for(call, 60) == "refunded 500"
    assert ran == [500]
    final = await client.decision(request.intent, final=True)
    assert (final.decision, final.approved_by, final.reasons[0]) == (ALLOW, ("alice",), APPROVAL_GRANTED)
    await client.wait_for(lambda: bool(audits(client, request.request_id, "verdict_accepted"))
                          and bool(audits(client, request.request_id, "approval_requested")), what="audit")


async def test_deny_with_a_reason_raises_approval_denied(
    gate: Gate, client: Client, approval_worker: WorkerProcess,
) -> None:
    ran: list[float] = []
    call = asyncio.create_task(refund_tool(gate, ran)(700))
    request = await request_for(client, gate.identity.agent_id or "")
    await cli_verdict(approval_worker, request, "bob", VerdictKind.DENY, "refund looks like fraud")
    with pytest.raises(ApprovalDenied) as raised:
        await asyncio.wait_for(call, 60)
    assert raised.value.reasons[:2] == ("approval_denied", "denied by bob: refund looks like fraud")
    assert ran == []


async def test_rejected_verdicts_are_audited(client: Client, approval_worker: WorkerProcess) -> None:
    pending, request = await pending_intent(client, "payments.refund")
    _, other = await pending_intent(client, "payments.refund", 600)  # another action: another digest
    assert other.intent_digest != request.intent_digest
    await raw_verdict(approval_worker, request, "mallory")  # not a reviewer
    await raw_verdict(approval_worker, request, "dave")  # a reviewer, but in the agent's owner team
    await raw_verdict(approval_worker, request, "alice", intent_digest=other.intent_digest)  # replayed
    unknown = request.model_copy(update={"request_id": uuid.uuid4()})
    await raw_verdict(approval_worker, unknown, "alice")
    await raw_verdict(approval_worker, request, "alice", signer=None)  # hand-made, unsigned
    await raw_verdict(approval_worker, request, "alice", signer=KEYS.reviewer("bob"))  # bob signs as alice
    await raw_verdict(approval_worker, request, "alice", decided_at=request.created_at - timedelta(hours=1))
    notes = await rejected(client, request.request_id, 6)
    assert [n.split(":")[0] for n in notes] == ["not_in_group", "self_approval", "digest_mismatch",
                                                "unauthenticated", "unauthenticated", "older_than_request"]
    [note] = await rejected(client, unknown.request_id, 1)
    assert note.startswith(UNKNOWN_REQUEST)
    assert not [d for d in client.decisions[request.request_id] if d.final]
    await raw_verdict(approval_worker, request, "alice")  # the real approval still works
    final = await client.decision(request.intent, final=True)
    assert (final.decision, final.approved_by) == (ALLOW, ("alice",))
    assert pending.approval_deadline_at == final.approval_deadline_at


async def test_two_approver_quorum(client: Client, approval_worker: WorkerProcess) -> None:
    _, request = await pending_intent(client, "payments.payout", 25_000)
    assert request.quorum == 2
    await cli_verdict(approval_worker, request, "alice")
    await client.wait_for(lambda: bool(audits(client, request.request_id, "verdict_accepted")), what="1 of 2")
    assert audits(client, request.request_id, "verdict_accepted")[0]["note"] == "approval 1 of 2"
    await raw_verdict(approval_worker, request, "ALICE")  # the same reviewer again
    assert (await rejected(client, request.request_id, 1))[0].startswith("duplicate_reviewer")
    assert not [d for d in client.decisions[request.request_id] if d.final], "1 of 2 is not enough"
    await cli_verdict(approval_worker, request, "bob")
    final = await client.decision(request.intent, final=True)
    assert (final.decision, final.approved_by) == (ALLOW, ("alice", "bob"))


async def test_an_approved_action_counts_against_its_limits(
    client: Client, approval_worker: WorkerProcess,
) -> None:
    pending, request = await pending_intent(client, "payments.refund")
    await cli_verdict(approval_worker, request, "alice")
    assert (await client.decision(request.intent, final=True)).decision is ALLOW
    a = pending.agent_id
    small = [make_intent(a, params={"amount": 10}, agent_owner=OWNER) for _ in range(2)]
    # The agent limit (2 per hour) now holds the approved refund: one more fits, not two.
    assert [(await client.decide(i)).decision for i in small] == [ALLOW, BLOCK]
    # A shared (fleet) limit counts it too, through the shared-limit partition.
    _, export = await pending_intent(client, "data.export")
    await cli_verdict(approval_worker, export, "alice")
    assert (await client.decision(export.intent, final=True)).decision is ALLOW
    again = await client.decide(make_intent(agent("other"), tool="data.export", agent_owner=OWNER))
    assert (again.decision, again.rules[-1]) == (BLOCK, "one-export-per-fleet")


async def test_a_late_verdict_after_expiry_is_rejected(
    client: Client, approval_worker: WorkerProcess,
) -> None:
    _, request = await pending_intent(client, "bank.wire")
    final = await client.decision(request.intent, final=True)  # the processor's timer, 3 s
    assert (final.decision, final.reasons[0]) == (BLOCK, APPROVAL_EXPIRED)
    await raw_verdict(approval_worker, request, "alice")
    [note] = await rejected(client, request.request_id, 1)
    assert note == "not_pending: approval is already expired"
    assert {d.decision for d in client.decisions[request.request_id] if d.final} == {BLOCK}


async def test_slack_click_approves_and_the_tool_runs(
    gate: Gate, client: Client, approval_worker: WorkerProcess, fake_slack: FakeSlackApi, users_file: Path,
    tmp_path: Path,
) -> None:
    worker = approval_worker
    config = bot_config(fake_slack.url, users_file, tmp_path / "posted.jsonl",
                        bootstrap_servers=worker.bootstrap, topics=TopicNames(worker.prefix),
                        group_id=f"{worker.prefix}-bot-{secrets.token_hex(3)}", default_channel="#fallback",
                        **trusting(KEYS))
    bot = SlackApprovalBot(config)
    await bot.start()
    try:
        ran: list[float] = []
        call = asyncio.create_task(refund_tool(gate, ran)(900))
        request = await request_for(client, gate.identity.agent_id or "")
        posted = await fake_slack.wait_for(
            "chat.postMessage", lambda p: str(request.request_id) in str(p.get("blocks")), timeout=60)
        assert posted["channel"] == "#payments"
        assert (await click(bot, ACTION_APPROVE, posted, "UALICE"))[0] == 200
        assert await asyncio.wait_for(call, 60) == "refunded 900" and ran == [900]
        await fake_slack.wait_for("chat.update", lambda p: "Approved by alice" in str(p["blocks"]), 60)
    finally:
        await bot.stop()


async def test_expiry_survives_a_worker_restart(client: Client, approval_worker: WorkerProcess) -> None:
    _, request = await pending_intent(client, "bank.wire")
    await client.wait_for(lambda: bool(audits(client, request.request_id, "approval_requested")),
                          what="the approval opened")
    assert not [d for d in client.decisions[request.request_id] if d.final]
    approval_worker.kill()  # pending, and the deadline (3 s) passes while no worker runs
    approval_worker.start()
    await approval_worker.wait_ready()
    final = await client.decision(request.intent, final=True)
    assert (final.decision, final.reasons[0], final.final) == (BLOCK, APPROVAL_EXPIRED, True)
    assert final.approval_deadline_at == request.deadline_at
    await client.wait_for(lambda: any(r["event_id"] == f"{request.request_id}:decision:final"
                                      for r in client.audit), what="the final's audit record")
    assert {d.decision for d in client.decisions[request.request_id] if d.final} == {BLOCK}
