"""The Slack bot against a real broker and a local fake of Slack's Web API.

Requests and finals are published as the workers publish them (signed with the request key of the test's
``WorkerKeys``); the bot trusts that key and signs its verdicts with a bot credential of the same ring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from consumers.slack_blocks import ACTION_APPROVE, ACTION_DENY, DENY_CALLBACK, ActionRef
from consumers.slack_bot import SlackApprovalBot
from schemas import ApprovalRequest, ApprovalVerdict, Decision, DecisionKind, TopicNames, VerdictKind
from schemas.decision import APPROVAL_EXPIRED, APPROVAL_GRANTED
from sluicegate.trust import AUTH_HEADER, RequestSigner, verify_signed
from tests.approvals.conftest import BOT_NAME, BOT_TOKEN, SIGNING_SECRET, BotFactory
from tests.approvals.factories import T0, WorkerKeys, make_request, make_verdict, tampered
from tests.approvals.kafka_util import (
    collect,
    collect_records,
    create_topics,
    produce,
    produce_signed,
    read_all,
)
from tests.approvals.slack_fake import FakeSlackApi, block_action, post_interaction, view_submission

pytestmark = pytest.mark.integration


@pytest.fixture
async def topics(kafka_bootstrap: str, unique_name: str) -> TopicNames:
    names = TopicNames(unique_name)
    await create_topics(kafka_bootstrap, names)
    return names


def future_request(quorum: int = 1, channel: str | None = "#approvals") -> ApprovalRequest:
    """A request whose deadline is far in the future (the bot skips expired ones)."""
    request = make_request(quorum=quorum, channel=channel)
    return request.model_copy(update={"deadline_at": request.deadline_at.replace(year=2099)})


async def publish(bootstrap: str, topics: TopicNames, request: ApprovalRequest, keys: WorkerKeys) -> None:
    """``request`` as a worker publishes it: signed with the request key."""
    await produce_signed(bootstrap, topics.approval_requests, str(request.request_id), request, keys)


def for_request(request: ApprovalRequest) -> Any:
    return lambda params: str(request.request_id) in str(params.get("blocks"))


def button(posted: dict[str, Any]) -> str:
    return str(posted["blocks"][-1]["elements"][0]["value"])


async def click(bot: SlackApprovalBot, action: str, posted: dict[str, Any], user: str) -> tuple[int, str]:
    channel, ts = "CAPPROVALS", "1700000000.000001"
    payload = block_action(action, button(posted), user, channel, ts)
    return await post_interaction(f"http://127.0.0.1:{bot.port}/slack/events", payload, SIGNING_SECRET)


async def verdicts(bootstrap: str, topics: TopicNames, count: int) -> list[ApprovalVerdict]:
    return [ApprovalVerdict.model_validate_json(v) for v in await collect(bootstrap, topics.approvals, count)]


async def test_request_is_posted_with_context_and_buttons(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames,
    keys: WorkerKeys,
) -> None:
    await start_bot()
    request = future_request()
    await publish(kafka_bootstrap, topics, request, keys)
    posted = await fake_slack.wait_for("chat.postMessage", for_request(request))
    assert posted["channel"] == "#approvals"
    assert posted["_auth"] == f"Bearer {BOT_TOKEN}"
    assert "refund-bot-1" in str(posted["blocks"]) and "payments.refund" in posted["text"]
    ref = ActionRef.decode(button(posted))
    assert ref is not None and ref.intent_digest == request.intent_digest


async def test_approve_click_produces_a_bound_verdict(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames,
    keys: WorkerKeys,
) -> None:
    bot = await start_bot()
    request = future_request(quorum=2)
    await publish(kafka_bootstrap, topics, request, keys)
    posted = await fake_slack.wait_for("chat.postMessage", for_request(request))
    status, _ = await click(bot, ACTION_APPROVE, posted, "UALICE")
    assert status == 200
    [record] = await collect_records(kafka_bootstrap, topics.approvals, 1)
    verdict = ApprovalVerdict.model_validate_json(record.value)
    assert (verdict.request_id, verdict.intent_digest) == (request.request_id, request.intent_digest)
    assert (verdict.reviewer, verdict.verdict, verdict.source) == ("alice", VerdictKind.APPROVE, "slack")
    assert verify_signed(keys.ring, record.headers, record.value, ("bot",)) == ("bot", BOT_NAME)
    update = await fake_slack.wait_for("chat.update", lambda p: "Approvals 1 of 2: alice" in str(p["blocks"]))
    assert (update["channel"], update["ts"]) == ("CAPPROVALS", "1700000000.000001")
    assert update["blocks"][-1]["type"] == "actions", "quorum not met: the buttons stay"


async def test_deny_opens_a_modal_and_sends_the_reason(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames,
    keys: WorkerKeys,
) -> None:
    bot = await start_bot()
    request = future_request()
    await publish(kafka_bootstrap, topics, request, keys)
    posted = await fake_slack.wait_for("chat.postMessage", for_request(request))
    assert (await click(bot, ACTION_DENY, posted, "UBOB"))[0] == 200
    opened = await fake_slack.wait_for("views.open")
    view = opened["view"]
    assert view["callback_id"] == DENY_CALLBACK
    url = f"http://127.0.0.1:{bot.port}/slack/events"
    status, body = await post_interaction(
        url, view_submission(DENY_CALLBACK, view["private_metadata"], "UBOB", " "), SIGNING_SECRET
    )
    assert status == 200 and '"response_action":"errors"' in body.replace(" ", ""), "a reason is required"
    submission = view_submission(DENY_CALLBACK, view["private_metadata"], "UBOB", "refund looks like fraud")
    assert (await post_interaction(url, submission, SIGNING_SECRET))[0] == 200
    [verdict] = await verdicts(kafka_bootstrap, topics, 1)
    assert (verdict.verdict, verdict.reviewer, verdict.reason) == (
        VerdictKind.DENY,
        "bob",
        "refund looks like fraud",
    )
    assert verdict.intent_digest == request.intent_digest
    await fake_slack.wait_for(
        "chat.update", lambda p: "Denied by bob: refund looks like fraud" in str(p["blocks"])
    )


async def test_forged_signature_gives_401_and_no_verdict(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames,
    keys: WorkerKeys,
) -> None:
    bot = await start_bot()
    request = future_request()
    await publish(kafka_bootstrap, topics, request, keys)
    posted = await fake_slack.wait_for("chat.postMessage", for_request(request))
    payload = block_action(ACTION_APPROVE, button(posted), "UALICE", "CAPPROVALS", "1.1")
    status, _ = await post_interaction(f"http://127.0.0.1:{bot.port}/slack/events", payload, "forged-secret")
    assert status == 401
    assert await read_all(kafka_bootstrap, topics.approvals) == []
    assert fake_slack.of("chat.update") == []


async def test_unmapped_user_gets_a_notice_and_no_verdict(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames,
    keys: WorkerKeys,
) -> None:
    bot = await start_bot()
    request = future_request()
    await publish(kafka_bootstrap, topics, request, keys)
    posted = await fake_slack.wait_for("chat.postMessage", for_request(request))
    assert (await click(bot, ACTION_APPROVE, posted, "UMALLORY"))[0] == 200
    notice = await fake_slack.wait_for("chat.postEphemeral")
    assert notice["user"] == "UMALLORY" and "not registered" in notice["text"]
    assert (await click(bot, ACTION_DENY, posted, "UMALLORY"))[0] == 200
    await fake_slack.wait_for("chat.postEphemeral", lambda p: len(fake_slack.of("chat.postEphemeral")) == 2)
    assert fake_slack.of("views.open") == []
    assert await read_all(kafka_bootstrap, topics.approvals) == []


async def test_final_decisions_and_other_verdicts_update_the_message(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames,
    keys: WorkerKeys,
) -> None:
    await start_bot()
    approved, expired = future_request(quorum=2), future_request()
    for request in (approved, expired):
        await publish(kafka_bootstrap, topics, request, keys)
        await fake_slack.wait_for("chat.postMessage", for_request(request))
    key, bot = str(approved.request_id), keys.bot(BOT_NAME)

    async def verdict(reviewer: str, signer: Any = bot, **fields: Any) -> None:
        """A verdict on the approvals topic, signed with ``signer``'s credential (None: unsigned)."""
        value = make_verdict(approved, reviewer, source="slack", **fields)
        headers = signer.headers(value.model_dump_json().encode()) if signer is not None else None
        await produce(kafka_bootstrap, topics.approvals, key, value, headers)

    await verdict("carol")  # from another instance of this bot (same credential)
    await fake_slack.wait_for("chat.update", lambda p: "Approvals 1 of 2: carol" in str(p["blocks"]))
    await verdict("mallory", intent_digest="0" * 64)  # replayed for another action
    await verdict("oscar", None)  # unsigned
    await verdict("peggy", keys.reviewer("peggy"))  # a reviewer's: the bot cannot verify it
    await verdict("trent", keys.bot("other-bot"))  # another bot's
    await verdict("dave")  # same partition, after the others: its update proves the order
    await fake_slack.wait_for("chat.update", lambda p: "Approvals 2 of 2: carol, dave" in str(p["blocks"]))
    finals = [
        Decision(
            request_id=approved.request_id,
            agent_id="refund-bot-1",
            decision=DecisionKind.ALLOW,
            reasons=(APPROVAL_GRANTED,),
            approved_by=("carol", "dave"),
            decided_at=T0,
            final=True,
            approval_deadline_at=approved.deadline_at,
        ),
        Decision(
            request_id=expired.request_id,
            agent_id="refund-bot-1",
            decision=DecisionKind.BLOCK,
            reasons=(APPROVAL_EXPIRED,),
            decided_at=T0,
            final=True,
            approval_deadline_at=expired.deadline_at,
        ),
    ]
    for decision in finals:
        result_key = str(decision.request_id)
        await produce_signed(kafka_bootstrap, topics.approval_results, result_key, decision, keys)
    done = await fake_slack.wait_for("chat.update", lambda p: "Approved by carol, dave" in str(p["blocks"]))
    assert done["blocks"][-1]["type"] != "actions"
    gone = await fake_slack.wait_for("chat.update", lambda p: "Expired" in str(p["blocks"]))
    assert gone["blocks"][-1]["type"] != "actions"
    updates = str(fake_slack.of("chat.update"))
    assert "mallory" not in updates, "a verdict for another digest is not shown"
    assert [name for name in ("oscar", "peggy", "trent") if name in updates] == [], "only this bot's verdicts"


def approval_final(request: ApprovalRequest, kind: DecisionKind, *reasons: str, by: str = "") -> Decision:
    return Decision(request_id=request.request_id, agent_id="refund-bot-1", decision=kind, reasons=reasons,
                    approved_by=(by,) if by else (), decided_at=T0, final=True,
                    approval_deadline_at=request.deadline_at)


async def test_only_a_final_on_approval_results_replaces_the_buttons(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames,
    keys: WorkerKeys,
) -> None:
    """A final on the fleet-wide decisions topic is not read; one under another key is ignored; one not
    signed by the workers (unsigned, or signed with another key) is ignored."""
    await start_bot()
    first, second = future_request(), future_request()
    for request in (first, second):
        await publish(kafka_bootstrap, topics, request, keys)
        await fake_slack.wait_for("chat.postMessage", for_request(request))
    results, first_key, second_key = topics.approval_results, str(first.request_id), str(second.request_id)
    expired = approval_final(first, DecisionKind.BLOCK, APPROVAL_EXPIRED)
    await produce_signed(kafka_bootstrap, topics.decisions, expired.agent_id, expired, keys)
    await produce_signed(kafka_bootstrap, results, second_key, expired, keys)  # misfiled
    forged = approval_final(first, DecisionKind.ALLOW, APPROVAL_GRANTED, by="mallory")
    await produce(kafka_bootstrap, results, first_key, forged)  # unsigned
    stranger = RequestSigner.generate().sign(forged.model_dump_json().encode())
    await produce(kafka_bootstrap, results, first_key, forged, [(AUTH_HEADER, stranger)])
    # The records above are read no later than this one, in the batch of its update or before it.
    await produce_signed(kafka_bootstrap, results, second_key,
                         approval_final(second, DecisionKind.ALLOW, APPROVAL_GRANTED, by="erin"), keys)
    await fake_slack.wait_for("chat.update", lambda p: "Approved by erin" in str(p["blocks"]))
    await produce_signed(kafka_bootstrap, results, first_key,
                         approval_final(first, DecisionKind.ALLOW, APPROVAL_GRANTED, by="carol"), keys)
    done = await fake_slack.wait_for("chat.update", lambda p: "Approved by carol" in str(p["blocks"])
                                     or "Expired" in str(p["blocks"]) or "mallory" in str(p["blocks"]))
    assert "Approved by carol" in str(done["blocks"]) and done["blocks"][-1]["type"] != "actions"
    assert "Expired" not in str(fake_slack.of("chat.update"))
    assert "mallory" not in str(fake_slack.of("chat.update"))


async def test_restart_does_not_repost(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames, tmp_path: Path,
    keys: WorkerKeys,
) -> None:
    bot = await start_bot()
    first = future_request()
    await publish(kafka_bootstrap, topics, first, keys)
    await fake_slack.wait_for("chat.postMessage", for_request(first))
    await bot.stop()
    bot = await start_bot()  # same group (committed offsets) and same posted-store
    second = future_request()
    await publish(kafka_bootstrap, topics, second, keys)
    await fake_slack.wait_for("chat.postMessage", for_request(second))
    await bot.stop()
    await start_bot(group_id=f"{topics.prefix}-fresh-group")  # rereads the topic: the store prevents reposts
    third = future_request()
    await publish(kafka_bootstrap, topics, third, keys)
    await fake_slack.wait_for("chat.postMessage", for_request(third))  # one partition: after first and second
    posts = [str(p["blocks"]) for p in fake_slack.of("chat.postMessage")]
    assert [sum(str(r.request_id) in p for p in posts) for r in (first, second, third)] == [1, 1, 1]


async def test_unpostable_and_invalid_requests_do_not_stop_the_bot(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames,
    keys: WorkerKeys,
) -> None:
    await start_bot()
    fake_slack.fail["chat.postMessage"] = "channel_not_found"
    broken = future_request(channel="#gone")
    await publish(kafka_bootstrap, topics, broken, keys)
    await fake_slack.wait_for("chat.postMessage", for_request(broken))
    del fake_slack.fail["chat.postMessage"]
    invalid = ApprovalVerdict.model_validate(make_verdict(broken).model_dump())  # not a request
    await produce_signed(kafka_bootstrap, topics.approval_requests, "junk", invalid, keys)  # a worker's bug
    dead = await collect(kafka_bootstrap, topics.dead_letter, 1)
    assert b"reviewer" in dead[0]
    past = make_request()  # its deadline (2025) has passed: recorded, not posted
    await publish(kafka_bootstrap, topics, past, keys)
    default = future_request(channel=None)
    await publish(kafka_bootstrap, topics, default, keys)
    posted = await fake_slack.wait_for("chat.postMessage", for_request(default))
    assert posted["channel"] == "#fallback"
    assert len(fake_slack.of("chat.postMessage")) == 2, "channel_not_found is not retried; expired not posted"


async def test_unverified_and_mismatched_requests_are_not_posted(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames,
    keys: WorkerKeys,
) -> None:
    """Unsigned, signed with another key, a real signature of another record, and signed but showing
    params that are not those of its digest: none is posted (one partition: the control comes last)."""
    await start_bot()
    unsigned, stranger, swapped, control = (future_request() for _ in range(4))
    mismatched = tampered(future_request(), amount=1)

    async def raw(request: ApprovalRequest, headers: Any) -> None:
        await produce(kafka_bootstrap, topics.approval_requests, str(request.request_id), request, headers)

    await raw(unsigned, None)
    await raw(stranger, [(AUTH_HEADER, RequestSigner.generate().sign(stranger.model_dump_json().encode()))])
    await raw(swapped, keys.sign(control.model_dump_json().encode()))
    await publish(kafka_bootstrap, topics, mismatched, keys)
    await publish(kafka_bootstrap, topics, control, keys)
    await fake_slack.wait_for("chat.postMessage", for_request(control))
    posts = str(fake_slack.of("chat.postMessage"))
    forged = (unsigned, stranger, swapped, mismatched)
    assert [r.request_id for r in forged if str(r.request_id) in posts] == []
    assert await read_all(kafka_bootstrap, topics.dead_letter) == [], "ignored, not dead-lettered"


async def test_trust_off_posts_unsigned_requests_but_checks_the_digest(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames,
) -> None:
    """A bot with trust off (no key, no credential) takes requests as is, sends unsigned verdicts, and
    still refuses a request whose params are not those of its digest."""
    bot = await start_bot(trust={"trust_off": True})
    mismatched, request = tampered(future_request(), amount=1), future_request()
    for item in (mismatched, request):
        await produce(kafka_bootstrap, topics.approval_requests, str(item.request_id), item)
    posted = await fake_slack.wait_for("chat.postMessage", for_request(request))
    assert str(mismatched.request_id) not in str(fake_slack.of("chat.postMessage"))
    assert (await click(bot, ACTION_APPROVE, posted, "UALICE"))[0] == 200
    [record] = await collect_records(kafka_bootstrap, topics.approvals, 1)
    assert ApprovalVerdict.model_validate_json(record.value).reviewer == "alice" and not record.headers
