"""The Slack bot against a real broker and a local fake of Slack's Web API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from consumers.slack_blocks import ACTION_APPROVE, ACTION_DENY, DENY_CALLBACK, ActionRef
from consumers.slack_bot import SlackApprovalBot
from schemas import ApprovalRequest, ApprovalVerdict, Decision, DecisionKind, TopicNames, VerdictKind
from schemas.decision import APPROVAL_EXPIRED, APPROVAL_GRANTED
from tests.approvals.conftest import BOT_TOKEN, SIGNING_SECRET, BotFactory
from tests.approvals.factories import T0, make_request, make_verdict
from tests.approvals.kafka_util import collect, create_topics, produce, read_all
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


async def publish(bootstrap: str, topics: TopicNames, request: ApprovalRequest) -> None:
    await produce(bootstrap, topics.approval_requests, str(request.request_id), request)


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
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames
) -> None:
    await start_bot()
    request = future_request()
    await publish(kafka_bootstrap, topics, request)
    posted = await fake_slack.wait_for("chat.postMessage", for_request(request))
    assert posted["channel"] == "#approvals"
    assert posted["_auth"] == f"Bearer {BOT_TOKEN}"
    assert "refund-bot-1" in str(posted["blocks"]) and "payments.refund" in posted["text"]
    ref = ActionRef.decode(button(posted))
    assert ref is not None and ref.intent_digest == request.intent_digest


async def test_approve_click_produces_a_bound_verdict(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames
) -> None:
    bot = await start_bot()
    request = future_request(quorum=2)
    await publish(kafka_bootstrap, topics, request)
    posted = await fake_slack.wait_for("chat.postMessage", for_request(request))
    status, _ = await click(bot, ACTION_APPROVE, posted, "UALICE")
    assert status == 200
    [verdict] = await verdicts(kafka_bootstrap, topics, 1)
    assert (verdict.request_id, verdict.intent_digest) == (request.request_id, request.intent_digest)
    assert (verdict.reviewer, verdict.verdict, verdict.source) == ("alice", VerdictKind.APPROVE, "slack")
    update = await fake_slack.wait_for("chat.update", lambda p: "Approvals 1 of 2: alice" in str(p["blocks"]))
    assert (update["channel"], update["ts"]) == ("CAPPROVALS", "1700000000.000001")
    assert update["blocks"][-1]["type"] == "actions", "quorum not met: the buttons stay"


async def test_deny_opens_a_modal_and_sends_the_reason(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames
) -> None:
    bot = await start_bot()
    request = future_request()
    await publish(kafka_bootstrap, topics, request)
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
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames
) -> None:
    bot = await start_bot()
    request = future_request()
    await publish(kafka_bootstrap, topics, request)
    posted = await fake_slack.wait_for("chat.postMessage", for_request(request))
    payload = block_action(ACTION_APPROVE, button(posted), "UALICE", "CAPPROVALS", "1.1")
    status, _ = await post_interaction(f"http://127.0.0.1:{bot.port}/slack/events", payload, "forged-secret")
    assert status == 401
    assert await read_all(kafka_bootstrap, topics.approvals) == []
    assert fake_slack.of("chat.update") == []


async def test_unmapped_user_gets_a_notice_and_no_verdict(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames
) -> None:
    bot = await start_bot()
    request = future_request()
    await publish(kafka_bootstrap, topics, request)
    posted = await fake_slack.wait_for("chat.postMessage", for_request(request))
    assert (await click(bot, ACTION_APPROVE, posted, "UMALLORY"))[0] == 200
    notice = await fake_slack.wait_for("chat.postEphemeral")
    assert notice["user"] == "UMALLORY" and "not registered" in notice["text"]
    assert (await click(bot, ACTION_DENY, posted, "UMALLORY"))[0] == 200
    await fake_slack.wait_for("chat.postEphemeral", lambda p: len(fake_slack.of("chat.postEphemeral")) == 2)
    assert fake_slack.of("views.open") == []
    assert await read_all(kafka_bootstrap, topics.approvals) == []


async def test_final_decisions_and_other_verdicts_update_the_message(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames
) -> None:
    await start_bot()
    approved, expired = future_request(quorum=2), future_request()
    for request in (approved, expired):
        await publish(kafka_bootstrap, topics, request)
        await fake_slack.wait_for("chat.postMessage", for_request(request))
    cli_verdict = make_verdict(approved, "carol")
    await produce(kafka_bootstrap, topics.approvals, str(approved.request_id), cli_verdict)
    await fake_slack.wait_for("chat.update", lambda p: "Approvals 1 of 2: carol" in str(p["blocks"]))
    replayed = make_verdict(approved, "mallory", intent_digest="0" * 64)
    await produce(kafka_bootstrap, topics.approvals, str(approved.request_id), replayed)
    second = make_verdict(approved, "dave")  # same partition, after the replay: its update proves the order
    await produce(kafka_bootstrap, topics.approvals, str(approved.request_id), second)
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
        await produce(kafka_bootstrap, topics.approval_results, str(decision.request_id), decision)
    done = await fake_slack.wait_for("chat.update", lambda p: "Approved by carol, dave" in str(p["blocks"]))
    assert done["blocks"][-1]["type"] != "actions"
    gone = await fake_slack.wait_for("chat.update", lambda p: "Expired" in str(p["blocks"]))
    assert gone["blocks"][-1]["type"] != "actions"
    assert "mallory" not in str(fake_slack.of("chat.update")), "a verdict for another digest is not shown"


def approval_final(request: ApprovalRequest, kind: DecisionKind, *reasons: str, by: str = "") -> Decision:
    return Decision(request_id=request.request_id, agent_id="refund-bot-1", decision=kind, reasons=reasons,
                    approved_by=(by,) if by else (), decided_at=T0, final=True,
                    approval_deadline_at=request.deadline_at)


async def test_only_a_final_on_approval_results_replaces_the_buttons(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames
) -> None:
    """A final on the fleet-wide decisions topic is not read; one under another key is ignored."""
    await start_bot()
    first, second = future_request(), future_request()
    for request in (first, second):
        await publish(kafka_bootstrap, topics, request)
        await fake_slack.wait_for("chat.postMessage", for_request(request))
    expired = approval_final(first, DecisionKind.BLOCK, APPROVAL_EXPIRED)
    await produce(kafka_bootstrap, topics.decisions, expired.agent_id, expired)
    await produce(kafka_bootstrap, topics.approval_results, str(second.request_id), expired)  # misfiled
    # The records above are read no later than this one, in the batch of its update or before it.
    await produce(kafka_bootstrap, topics.approval_results, str(second.request_id),
                  approval_final(second, DecisionKind.ALLOW, APPROVAL_GRANTED, by="erin"))
    await fake_slack.wait_for("chat.update", lambda p: "Approved by erin" in str(p["blocks"]))
    await produce(kafka_bootstrap, topics.approval_results, str(first.request_id),
                  approval_final(first, DecisionKind.ALLOW, APPROVAL_GRANTED, by="carol"))
    done = await fake_slack.wait_for("chat.update", lambda p: "Approved by carol" in str(p["blocks"])
                                     or "Expired" in str(p["blocks"]))
    assert "Approved by carol" in str(done["blocks"]) and done["blocks"][-1]["type"] != "actions"
    assert "Expired" not in str(fake_slack.of("chat.update"))


async def test_restart_does_not_repost(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames, tmp_path: Path
) -> None:
    bot = await start_bot()
    first = future_request()
    await publish(kafka_bootstrap, topics, first)
    await fake_slack.wait_for("chat.postMessage", for_request(first))
    await bot.stop()
    bot = await start_bot()  # same group (committed offsets) and same posted-store
    second = future_request()
    await publish(kafka_bootstrap, topics, second)
    await fake_slack.wait_for("chat.postMessage", for_request(second))
    await bot.stop()
    await start_bot(group_id=f"{topics.prefix}-fresh-group")  # rereads the topic: the store prevents reposts
    third = future_request()
    await publish(kafka_bootstrap, topics, third)
    await fake_slack.wait_for("chat.postMessage", for_request(third))  # one partition: after first and second
    posts = [str(p["blocks"]) for p in fake_slack.of("chat.postMessage")]
    assert [sum(str(r.request_id) in p for p in posts) for r in (first, second, third)] == [1, 1, 1]


async def test_unpostable_and_invalid_requests_do_not_stop_the_bot(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames
) -> None:
    await start_bot()
    fake_slack.fail["chat.postMessage"] = "channel_not_found"
    broken = future_request(channel="#gone")
    await publish(kafka_bootstrap, topics, broken)
    await fake_slack.wait_for("chat.postMessage", for_request(broken))
    del fake_slack.fail["chat.postMessage"]
    invalid = ApprovalVerdict.model_validate(make_verdict(broken).model_dump())  # not a request
    await produce(kafka_bootstrap, topics.approval_requests, "junk", invalid)
    dead = await collect(kafka_bootstrap, topics.dead_letter, 1)
    assert b"reviewer" in dead[0]
    past = make_request()  # its deadline (2025) has passed: recorded, not posted
    await publish(kafka_bootstrap, topics, past)
    default = future_request(channel=None)
    await publish(kafka_bootstrap, topics, default)
    posted = await fake_slack.wait_for("chat.postMessage", for_request(default))
    assert posted["channel"] == "#fallback"
    assert len(fake_slack.of("chat.postMessage")) == 2, "channel_not_found is not retried; expired not posted"
