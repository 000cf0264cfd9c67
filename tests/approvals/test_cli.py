"""The CLI reviewer on the real broker: list pending requests, approve and deny them, with trust.

The tests publish approval requests and finals as the workers do (signed with the request key of a
``WorkerKeys``) and send verdicts with reviewer credentials of the same key ring.
"""

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
from sluicegate.cli.review import Reviewer, ReviewError, ReviewTrust, pending_requests, submit_verdict
from sluicegate.trust import AUTH_HEADER, RequestSigner, verify_signed
from tests.approvals.factories import T0, WorkerKeys, make_request, tampered
from tests.approvals.kafka_util import create_topics, produce, produce_signed, read_all, read_records

pytestmark = pytest.mark.integration


@pytest.fixture
async def topics(kafka_bootstrap: str, unique_name: str) -> TopicNames:
    names = TopicNames(unique_name)
    await create_topics(kafka_bootstrap, names, partitions=2)
    return names


@pytest.fixture
def trust(keys: WorkerKeys) -> ReviewTrust:
    return ReviewTrust(keys.public)


async def approvals(bootstrap: str, topics: TopicNames) -> list[ApprovalVerdict]:
    return [ApprovalVerdict.model_validate_json(v) for v in await read_all(bootstrap, topics.approvals)]


async def publish(bootstrap: str, topics: TopicNames, keys: WorkerKeys, *requests: ApprovalRequest) -> None:
    for request in requests:
        await produce_signed(bootstrap, topics.approval_requests, str(request.request_id), request, keys)


def final(request: ApprovalRequest, by: str = "alice") -> Decision:
    return Decision(request_id=request.request_id, agent_id="refund-bot-1", decision=DecisionKind.ALLOW,
                    approved_by=(by,), decided_at=T0, final=True)


async def test_list_hides_decided_requests_and_flags_overdue(
    kafka_bootstrap: str, topics: TopicNames, keys: WorkerKeys, trust: ReviewTrust
) -> None:
    waiting, decided, late = make_request(), make_request(), make_request(timeout=timedelta(minutes=1))
    await publish(kafka_bootstrap, topics, keys, waiting, decided, late)
    await produce_signed(kafka_bootstrap, topics.approval_requests, "junk", waiting.intent, keys)  # ignored
    pending_d = Decision(
        request_id=waiting.request_id,
        agent_id="refund-bot-1",
        decision=DecisionKind.REQUIRE_APPROVAL,
        decided_at=T0,
        final=False,
    )
    expired = Decision(
        request_id=decided.request_id,
        agent_id="refund-bot-1",
        decision=DecisionKind.BLOCK,
        reasons=(APPROVAL_EXPIRED,),
        decided_at=T0,
        final=True,
    )
    for decision in (pending_d, expired):  # a record that is not final settles nothing
        key = str(decision.request_id)
        await produce_signed(kafka_bootstrap, topics.approval_results, key, decision, keys)
    pending = await pending_requests(kafka_bootstrap, topics, T0 + timedelta(minutes=5), trust=trust)
    assert [(p.request.request_id, p.overdue) for p in pending.requests] == [
        (late.request_id, True),
        (waiting.request_id, False),
    ]


async def test_only_a_final_on_approval_results_settles_a_request(
    kafka_bootstrap: str, topics: TopicNames, keys: WorkerKeys, trust: ReviewTrust
) -> None:
    """Finals on the fleet-wide decisions topic, or under another key, leave a request pending."""
    a, b, c = make_request(), make_request(), make_request()
    await publish(kafka_bootstrap, topics, keys, a, b, c)

    async def pending_ids() -> set[UUID]:
        return {p.request.request_id for p in (await pending_requests(kafka_bootstrap, topics, T0,
                                                                       trust=trust)).requests}

    async def approve(request: ApprovalRequest) -> ApprovalVerdict:
        bob = Reviewer("bob", keys.reviewer("bob"))
        return await submit_verdict(kafka_bootstrap, topics, str(request.request_id), reviewer=bob,
                                    verdict=VerdictKind.APPROVE, reason=None, now=T0, trust=trust)

    results = topics.approval_results
    await produce_signed(kafka_bootstrap, topics.decisions, "refund-bot-1", final(a), keys)
    await produce_signed(kafka_bootstrap, results, str(b.request_id), final(b), keys)
    await produce_signed(kafka_bootstrap, results, str(a.request_id), final(c), keys)  # misfiled
    assert await pending_ids() == {a.request_id, c.request_id}
    assert (await approve(a)).request_id == a.request_id
    with pytest.raises(ReviewError, match="no pending approval request"):
        await approve(b)
    await produce_signed(kafka_bootstrap, topics.approval_results, str(a.request_id), final(a), keys)
    assert await pending_ids() == {c.request_id}
    with pytest.raises(ReviewError, match="no pending approval request"):
        await approve(a)
    assert [v.request_id for v in await approvals(kafka_bootstrap, topics)] == [a.request_id]


async def test_approve_and_deny_send_signed_bound_verdicts(
    kafka_bootstrap: str, topics: TopicNames, keys: WorkerKeys, trust: ReviewTrust
) -> None:
    request = make_request()
    await publish(kafka_bootstrap, topics, keys, request)
    prefix = str(request.request_id)[:8]
    approved = await submit_verdict(
        kafka_bootstrap, topics, prefix, reviewer=Reviewer("alice", keys.reviewer("alice")),
        verdict=VerdictKind.APPROVE, reason=None, now=T0, trust=trust,
    )
    denied = await submit_verdict(
        kafka_bootstrap, topics, str(request.request_id), reviewer=Reviewer("bob", keys.reviewer("bob")),
        verdict=VerdictKind.DENY, reason=" too big ", now=T0, trust=trust,
    )
    sent = await approvals(kafka_bootstrap, topics)
    assert sent == [approved, denied]
    assert {v.intent_digest for v in sent} == {request.intent_digest}
    assert [(v.reviewer, v.verdict, v.reason, v.source) for v in sent] == [
        ("alice", VerdictKind.APPROVE, None, "cli"),
        ("bob", VerdictKind.DENY, "too big", "cli"),
    ]
    records = await read_records(kafka_bootstrap, topics.approvals)
    signers = [verify_signed(keys.ring, r.headers, r.value, ("reviewer",)) for r in records]
    assert signers == [("reviewer", "alice"), ("reviewer", "bob")]


async def test_unsigned_and_wrongly_signed_requests_are_not_listed(
    kafka_bootstrap: str, topics: TopicNames, keys: WorkerKeys, trust: ReviewTrust
) -> None:
    """Only requests signed with the workers' key are listed or approvable; the others are reported."""
    good, unsigned, stranger, swapped, hmac_signed = (make_request() for _ in range(5))
    await publish(kafka_bootstrap, topics, keys, good)
    forgeries = [
        (unsigned, None),
        (stranger, [(AUTH_HEADER, RequestSigner.generate().sign(stranger.model_dump_json().encode()))]),
        (swapped, keys.sign(good.model_dump_json().encode())),  # a real signature, of another record
        (hmac_signed, keys.reviewer("alice").headers(hmac_signed.model_dump_json().encode())),
    ]
    for request, headers in forgeries:
        await produce(kafka_bootstrap, topics.approval_requests, str(request.request_id), request, headers)
    pending = await pending_requests(kafka_bootstrap, topics, T0, trust=trust)
    assert [p.request.request_id for p in pending.requests] == [good.request_id]
    forged_ids = sorted(str(r.request_id) for r, _ in forgeries)
    assert sorted(i.request_id or "" for i in pending.ignored) == forged_ids
    assert {i.why.split(" (")[0] for i in pending.ignored} == {"not signed by the workers"}
    with pytest.raises(ReviewError, match=r"no pending approval request .* not signed by the workers"):
        await submit_verdict(kafka_bootstrap, topics, str(stranger.request_id),
                             reviewer=Reviewer("alice", keys.reviewer("alice")), verdict=VerdictKind.APPROVE,
                             reason=None, now=T0, trust=trust)
    assert await read_all(kafka_bootstrap, topics.approvals) == []


@pytest.mark.parametrize("signed", [True, False], ids=["trust-on", "trust-off"])
async def test_a_request_whose_params_do_not_match_its_digest_is_not_approvable(
    kafka_bootstrap: str, topics: TopicNames, keys: WorkerKeys, signed: bool
) -> None:
    """Harmless-looking params under the digest of another action: not listed, not approvable, even when
    signed (the digest is recomputed with trust on or off)."""
    real = make_request()
    shown = tampered(real, amount=1)
    trust = ReviewTrust(keys.public) if signed else ReviewTrust(None, off=True)
    value = shown.model_dump_json().encode()
    await produce(kafka_bootstrap, topics.approval_requests, str(shown.request_id), shown,
                  keys.sign(value) if signed else None)
    control = make_request()
    await publish(kafka_bootstrap, topics, keys, control)
    pending = await pending_requests(kafka_bootstrap, topics, T0, trust=trust)
    assert [p.request.request_id for p in pending.requests] == [control.request_id]
    [ignored] = pending.ignored
    assert ignored.request_id == str(shown.request_id) and "not the digest of the intent shown" in ignored.why
    reviewer = Reviewer("alice", keys.reviewer("alice")) if signed else Reviewer("alice")
    with pytest.raises(ReviewError, match="no pending approval request"):
        await submit_verdict(kafka_bootstrap, topics, str(shown.request_id), reviewer=reviewer,
                             verdict=VerdictKind.APPROVE, reason=None, now=T0, trust=trust)
    assert await read_all(kafka_bootstrap, topics.approvals) == []


async def test_a_forged_final_settles_nothing(
    kafka_bootstrap: str, topics: TopicNames, keys: WorkerKeys, trust: ReviewTrust
) -> None:
    """An unsigned final, or one signed with another key, leaves the request pending; the workers' ends it."""
    request = make_request()
    await publish(kafka_bootstrap, topics, keys, request)
    key, forged = str(request.request_id), final(request, by="mallory")
    await produce(kafka_bootstrap, topics.approval_results, key, forged)
    stranger = RequestSigner.generate().sign(forged.model_dump_json().encode())
    await produce(kafka_bootstrap, topics.approval_results, key, forged, [(AUTH_HEADER, stranger)])
    pending = await pending_requests(kafka_bootstrap, topics, T0, trust=trust)
    assert [p.request.request_id for p in pending.requests] == [request.request_id]
    assert [i.request_id for i in pending.ignored] == [key, key]
    await produce_signed(kafka_bootstrap, topics.approval_results, key, final(request), keys)
    assert (await pending_requests(kafka_bootstrap, topics, T0, trust=trust)).requests == []


@pytest.mark.parametrize(
    ("request_id", "reviewer", "kind", "reason", "error"),
    [
        ("unknown-id", "alice", VerdictKind.APPROVE, None, "no pending approval request"),
        ("abc", "alice", VerdictKind.APPROVE, None, "too short"),
        ("REQ", "alice", VerdictKind.DENY, "  ", "needs a reason"),
        ("REQ", "", VerdictKind.APPROVE, None, "needs SLUICEGATE_REVIEWER_CREDENTIAL"),
        ("DECIDED", "alice", VerdictKind.APPROVE, None, "no pending approval request"),
    ],
)
async def test_verdict_errors(
    kafka_bootstrap: str,
    topics: TopicNames,
    keys: WorkerKeys,
    trust: ReviewTrust,
    request_id: str,
    reviewer: str,
    kind: VerdictKind,
    reason: str | None,
    error: str,
) -> None:
    request, decided = make_request(), make_request()
    await publish(kafka_bootstrap, topics, keys, request, decided)
    settled = Decision(request_id=decided.request_id, decision=DecisionKind.ALLOW, decided_at=T0, final=True)
    await produce_signed(kafka_bootstrap, topics.approval_results, str(decided.request_id), settled, keys)
    target = {"REQ": str(request.request_id), "DECIDED": str(decided.request_id)}.get(request_id, request_id)
    who = Reviewer(reviewer, keys.reviewer(reviewer)) if reviewer else Reviewer("alice")  # "": no credential
    with pytest.raises(ReviewError, match=error):
        await submit_verdict(
            kafka_bootstrap, topics, target, reviewer=who, verdict=kind, reason=reason, now=T0, trust=trust
        )
    assert await read_all(kafka_bootstrap, topics.approvals) == []


@pytest.fixture
def cli(kafka_bootstrap: str, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The CLI on this test's topics, with no trust setting from the environment."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("SLUICEGATE_TOPIC_PREFIX", unique_name)
    for name in ("TRUST_PUBLIC_KEY", "TRUST_OFF", "REVIEWER_CREDENTIAL"):
        monkeypatch.delenv(f"SLUICEGATE_{name}", raising=False)
    _register()
    return CliRunner()


def future_request() -> ApprovalRequest:
    return make_request().model_copy(update={"deadline_at": T0.replace(year=2099)})


def test_commands_end_to_end(
    cli: CliRunner, kafka_bootstrap: str, unique_name: str, keys: WorkerKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = TopicNames(unique_name)
    request, forged = future_request(), future_request()

    async def setup() -> None:
        await create_topics(kafka_bootstrap, topics)
        await publish(kafka_bootstrap, topics, keys, request)
        await produce(kafka_bootstrap, topics.approval_requests, str(forged.request_id), forged)

    asyncio.run(setup())
    monkeypatch.setenv("SLUICEGATE_TRUST_PUBLIC_KEY", keys.public)
    monkeypatch.setenv("SLUICEGATE_REVIEWER_CREDENTIAL", str(keys.reviewer("bob")))
    listed = cli.invoke(app, ["approvals", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["request_id"], row["overdue"], row["quorum"]) == (str(request.request_id), False, 1)
    assert f"(request {forged.request_id}): not signed by the workers" in listed.stderr
    table = cli.invoke(app, ["approvals", "list"])
    assert table.exit_code == 0 and str(request.request_id)[:8] in table.stdout, table.output
    assert str(forged.request_id)[:8] not in table.stdout
    ok = cli.invoke(app, ["approvals", "deny", str(request.request_id), "--reason", "no"])
    assert ok.exit_code == 0 and "DENY by bob (signed)" in ok.output, ok.output
    missing = cli.invoke(app, ["approvals", "approve", "0000ffff"])
    assert missing.exit_code == 1 and "no pending approval request" in missing.output
    no_reason = cli.invoke(app, ["approvals", "deny", str(request.request_id)])
    assert no_reason.exit_code != 0
    [record] = asyncio.run(read_records(kafka_bootstrap, topics.approvals))
    assert verify_signed(keys.ring, record.headers, record.value, ("reviewer",)) == ("reviewer", "bob")


def test_approve_without_a_reviewer_credential_sends_nothing(
    cli: CliRunner, kafka_bootstrap: str, unique_name: str, keys: WorkerKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No credential (or another reviewer's name than the credential's): refused before sending."""
    topics = TopicNames(unique_name)
    request = future_request()

    async def setup() -> None:
        await create_topics(kafka_bootstrap, topics)
        await publish(kafka_bootstrap, topics, keys, request)

    asyncio.run(setup())
    request_id = str(request.request_id)
    untrusting = cli.invoke(app, ["approvals", "list"])
    assert untrusting.exit_code == 1 and "SLUICEGATE_TRUST_PUBLIC_KEY" in untrusting.output, untrusting.output
    assert "SLUICEGATE_TRUST_OFF=1" in untrusting.output
    monkeypatch.setenv("SLUICEGATE_TRUST_PUBLIC_KEY", keys.public)
    for argv in (["approve", request_id], ["approve", request_id, "--reviewer", "alice"],
                 ["deny", request_id, "--reviewer", "alice", "--reason", "no"]):
        refused = cli.invoke(app, ["approvals", *argv])
        assert refused.exit_code == 1 and "SLUICEGATE_REVIEWER_CREDENTIAL" in refused.output, refused.output
        assert "nothing was sent" in refused.output
    monkeypatch.setenv("SLUICEGATE_REVIEWER_CREDENTIAL", str(keys.reviewer("bob")))
    impostor = cli.invoke(app, ["approvals", "approve", request_id, "--reviewer", "alice"])
    assert impostor.exit_code == 1, impostor.output
    assert "is not the reviewer of SLUICEGATE_REVIEWER_CREDENTIAL" in impostor.output
    assert asyncio.run(read_all(kafka_bootstrap, topics.approvals)) == []
    same = cli.invoke(app, ["approvals", "approve", request_id, "--reviewer", "bob"])  # the control
    assert same.exit_code == 0, same.output
    assert len(asyncio.run(read_all(kafka_bootstrap, topics.approvals))) == 1


def test_trust_off_reads_unsigned_requests_and_sends_unsigned_verdicts(
    cli: CliRunner, kafka_bootstrap: str, unique_name: str, keys: WorkerKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment without keys works as before trust: --reviewer names the reviewer, nothing is signed."""
    topics = TopicNames(unique_name)
    request = future_request()

    async def setup() -> None:
        await create_topics(kafka_bootstrap, topics)
        await produce(kafka_bootstrap, topics.approval_requests, str(request.request_id), request)

    asyncio.run(setup())
    monkeypatch.setenv("SLUICEGATE_TRUST_OFF", "1")
    listed = cli.invoke(app, ["approvals", "list", "--json"])
    assert listed.exit_code == 0 and str(request.request_id) in listed.stdout, listed.output
    nameless = cli.invoke(app, ["approvals", "approve", str(request.request_id)[:8]])
    assert nameless.exit_code == 1 and "--reviewer" in nameless.output
    ok = cli.invoke(app, ["approvals", "approve", str(request.request_id)[:8], "--reviewer", "lena"])
    assert ok.exit_code == 0 and "APPROVE by lena (unsigned: trust is off)" in ok.output, ok.output
    [record] = asyncio.run(read_records(kafka_bootstrap, topics.approvals))
    assert ApprovalVerdict.model_validate_json(record.value).reviewer == "lena" and not record.headers
