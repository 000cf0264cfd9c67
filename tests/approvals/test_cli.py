"""The CLI reviewer on the real broker: list pending requests, approve and deny them."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from uuid import UUID

import pytest
from typer.testing import CliRunner

from schemas import ApprovalRequest, ApprovalVerdict, Decision, DecisionKind, TopicNames, VerdictKind
from schemas.decision import APPROVAL_EXPIRED
from sluicegate.cli import _register, app
from sluicegate.cli.review import ReviewError, pending_requests, submit_verdict
from tests.approvals.factories import T0, make_request
from tests.approvals.kafka_util import create_topics, produce, read_all

pytestmark = pytest.mark.integration


@pytest.fixture
async def topics(kafka_bootstrap: str, unique_name: str) -> TopicNames:
    names = TopicNames(unique_name)
    await create_topics(kafka_bootstrap, names, partitions=2)
    return names


async def approvals(bootstrap: str, topics: TopicNames) -> list[ApprovalVerdict]:
    return [ApprovalVerdict.model_validate_json(v) for v in await read_all(bootstrap, topics.approvals)]


async def test_list_hides_decided_requests_and_flags_overdue(
    kafka_bootstrap: str, topics: TopicNames
) -> None:
    waiting, decided, late = make_request(), make_request(), make_request(timeout=timedelta(minutes=1))
    for request in (waiting, decided, late):
        await produce(kafka_bootstrap, topics.approval_requests, str(request.request_id), request)
    await produce(kafka_bootstrap, topics.approval_requests, "junk", waiting.intent)  # ignored
    pending_d = Decision(
        request_id=waiting.request_id,
        agent_id="refund-bot-1",
        decision=DecisionKind.REQUIRE_APPROVAL,
        decided_at=T0,
        final=False,
    )
    final = Decision(
        request_id=decided.request_id,
        agent_id="refund-bot-1",
        decision=DecisionKind.BLOCK,
        reasons=(APPROVAL_EXPIRED,),
        decided_at=T0,
        final=True,
    )
    for decision in (pending_d, final):  # a record that is not final settles nothing
        await produce(kafka_bootstrap, topics.approval_results, str(decision.request_id), decision)
    pending = await pending_requests(kafka_bootstrap, topics, T0 + timedelta(minutes=5))
    assert [(p.request.request_id, p.overdue) for p in pending] == [
        (late.request_id, True),
        (waiting.request_id, False),
    ]


async def test_only_a_final_on_approval_results_settles_a_request(
    kafka_bootstrap: str, topics: TopicNames
) -> None:
    """Finals on the fleet-wide decisions topic, or under another key, leave a request pending."""
    a, b, c = make_request(), make_request(), make_request()
    for request in (a, b, c):
        await produce(kafka_bootstrap, topics.approval_requests, str(request.request_id), request)

    def final(request: ApprovalRequest) -> Decision:
        return Decision(request_id=request.request_id, agent_id="refund-bot-1", decision=DecisionKind.ALLOW,
                        approved_by=("alice",), decided_at=T0, final=True)

    async def pending_ids() -> set[UUID]:
        return {p.request.request_id for p in await pending_requests(kafka_bootstrap, topics, T0)}

    async def approve(request: ApprovalRequest) -> ApprovalVerdict:
        return await submit_verdict(kafka_bootstrap, topics, str(request.request_id), reviewer="bob",
                                    verdict=VerdictKind.APPROVE, reason=None, now=T0)

    await produce(kafka_bootstrap, topics.decisions, "refund-bot-1", final(a))
    await produce(kafka_bootstrap, topics.approval_results, str(b.request_id), final(b))
    await produce(kafka_bootstrap, topics.approval_results, str(a.request_id), final(c))  # misfiled
    assert await pending_ids() == {a.request_id, c.request_id}
    assert (await approve(a)).request_id == a.request_id
    with pytest.raises(ReviewError, match="no pending approval request"):
        await approve(b)
    await produce(kafka_bootstrap, topics.approval_results, str(a.request_id), final(a))
    assert await pending_ids() == {c.request_id}
    with pytest.raises(ReviewError, match="no pending approval request"):
        await approve(a)
    assert [v.request_id for v in await approvals(kafka_bootstrap, topics)] == [a.request_id]


async def test_approve_and_deny_send_bound_verdicts(kafka_bootstrap: str, topics: TopicNames) -> None:
    request = make_request()
    await produce(kafka_bootstrap, topics.approval_requests, str(request.request_id), request)
    prefix = str(request.request_id)[:8]
    approved = await submit_verdict(
        kafka_bootstrap, topics, prefix, reviewer="alice", verdict=VerdictKind.APPROVE, reason=None, now=T0
    )
    denied = await submit_verdict(
        kafka_bootstrap,
        topics,
        str(request.request_id),
        reviewer="bob",
        verdict=VerdictKind.DENY,
        reason=" too big ",
        now=T0,
    )
    sent = await approvals(kafka_bootstrap, topics)
    assert sent == [approved, denied]
    assert {v.intent_digest for v in sent} == {request.intent_digest}
    assert [(v.reviewer, v.verdict, v.reason, v.source) for v in sent] == [
        ("alice", VerdictKind.APPROVE, None, "cli"),
        ("bob", VerdictKind.DENY, "too big", "cli"),
    ]


@pytest.mark.parametrize(
    ("request_id", "reviewer", "kind", "reason", "error"),
    [
        ("unknown-id", "alice", VerdictKind.APPROVE, None, "no pending approval request"),
        ("abc", "alice", VerdictKind.APPROVE, None, "too short"),
        ("REQ", "alice", VerdictKind.DENY, "  ", "needs a reason"),
        ("REQ", " ", VerdictKind.APPROVE, None, "needs a reviewer"),
        ("DECIDED", "alice", VerdictKind.APPROVE, None, "no pending approval request"),
    ],
)
async def test_verdict_errors(
    kafka_bootstrap: str,
    topics: TopicNames,
    request_id: str,
    reviewer: str,
    kind: VerdictKind,
    reason: str | None,
    error: str,
) -> None:
    request, decided = make_request(), make_request()
    for item in (request, decided):
        await produce(kafka_bootstrap, topics.approval_requests, str(item.request_id), item)
    final = Decision(request_id=decided.request_id, decision=DecisionKind.ALLOW, decided_at=T0, final=True)
    await produce(kafka_bootstrap, topics.approval_results, str(decided.request_id), final)
    target = {"REQ": str(request.request_id), "DECIDED": str(decided.request_id)}.get(request_id, request_id)
    with pytest.raises(ReviewError, match=error):
        await submit_verdict(
            kafka_bootstrap, topics, target, reviewer=reviewer, verdict=kind, reason=reason, now=T0
        )
    assert await read_all(kafka_bootstrap, topics.approvals) == []


def test_commands_end_to_end(kafka_bootstrap: str, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    topics = TopicNames(unique_name)
    request = make_request().model_copy(update={"deadline_at": T0.replace(year=2099)})

    async def setup() -> None:
        await create_topics(kafka_bootstrap, topics)
        await produce(kafka_bootstrap, topics.approval_requests, str(request.request_id), request)

    asyncio.run(setup())
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("SLUICEGATE_TOPIC_PREFIX", unique_name)
    _register()
    runner = CliRunner()
    listed = runner.invoke(app, ["approvals", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = [json.loads(line) for line in listed.output.splitlines()]
    assert (row["request_id"], row["overdue"], row["quorum"]) == (str(request.request_id), False, 1)
    table = runner.invoke(app, ["approvals", "list"])
    assert table.exit_code == 0 and str(request.request_id)[:8] in table.output, table.output
    ok = runner.invoke(
        app, ["approvals", "deny", str(request.request_id), "--reviewer", "bob", "--reason", "no"]
    )
    assert ok.exit_code == 0 and "DENY by bob" in ok.output, ok.output
    missing = runner.invoke(app, ["approvals", "approve", "0000ffff", "--reviewer", "bob"])
    assert missing.exit_code == 1 and "no pending approval request" in missing.output
    no_reason = runner.invoke(app, ["approvals", "deny", str(request.request_id), "--reviewer", "bob"])
    assert no_reason.exit_code != 0
