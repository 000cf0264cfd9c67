"""Unit tests of the Slack pieces that need no broker: config, blocks, identities, store, signatures."""

from __future__ import annotations

import json
import urllib.parse
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from consumers.slack_blocks import (
    ACTION_APPROVE,
    ACTION_DENY,
    ActionRef,
    MessageStatus,
    approval_message,
    deny_modal,
    outcome_text,
)
from consumers.slack_bot import SlackApprovalBot, SlackBotConfig, SlackConfigError
from consumers.slack_identity import SlackIdentityError, SlackIdentityMap
from consumers.slack_store import PostedMessage, PostedStore
from schemas import Decision, DecisionKind, Risk, RiskFactor
from schemas.decision import APPROVAL_DENIED, APPROVAL_EXPIRED, APPROVAL_GRANTED
from sluicegate.cli.review import Reviewer, ReviewError, ReviewTrust, digest_mismatch
from sluicegate.trust import TrustError
from tests.approvals.conftest import BOT_TOKEN, SIGNING_SECRET, bot_config, trusting
from tests.approvals.factories import T0, WorkerKeys, make_intent, make_request, tampered
from tests.approvals.slack_fake import block_action, sign


@pytest.mark.parametrize(
    ("token", "secret", "users", "error"),
    [
        (None, SIGNING_SECRET, True, "SLUICEGATE_SLACK_BOT_TOKEN"),
        (BOT_TOKEN, "", True, "SLUICEGATE_SLACK_SIGNING_SECRET"),
        (None, None, True, "SLUICEGATE_SLACK_BOT_TOKEN and SLUICEGATE_SLACK_SIGNING_SECRET"),
        ("xoxp-user-token", SIGNING_SECRET, True, "bot token"),
        (BOT_TOKEN, SIGNING_SECRET, False, "SLUICEGATE_SLACK_REVIEWERS_FILE"),
    ],
)
def test_config_errors_name_what_is_missing(
    token: str | None, secret: str | None, users: bool, error: str, users_file: Path
) -> None:
    with pytest.raises(SlackConfigError, match=error):
        SlackBotConfig.create(
            bot_token=token,
            signing_secret=secret,
            reviewers_file=users_file if users else None,
            bootstrap_servers="x:1",
            state_file=Path("s"),
            **trusting(WorkerKeys()),
        )


KEYS = WorkerKeys()


@pytest.mark.parametrize(
    ("trust", "error"),
    [
        ({}, "needs SLUICEGATE_TRUST_PUBLIC_KEY"),
        ({"bot_credential": str(KEYS.bot())}, "needs SLUICEGATE_TRUST_PUBLIC_KEY"),
        ({"trust_public_key": KEYS.public}, "needs SLUICEGATE_BOT_CREDENTIAL"),
        ({"trust_public_key": "not-a-key", "bot_credential": str(KEYS.bot())}, "not an Ed25519 public key"),
        ({"trust_public_key": KEYS.public, "bot_credential": str(KEYS.reviewer("lena"))}, "not a bot one"),
        ({"trust_public_key": KEYS.public, "bot_credential": "sgs1.bot.k1"}, "looks like sgs1.bot"),
    ],
)
def test_config_refuses_to_run_without_trust(trust: dict[str, Any], error: str, users_file: Path) -> None:
    with pytest.raises(SlackConfigError, match=error):
        SlackBotConfig.create(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, reviewers_file=users_file,
                              bootstrap_servers="x:1", state_file=Path("s"), **trust)


def test_config_trust(users_file: Path) -> None:
    """The bot verifies with the workers' key and signs as its credential; trust off needs neither."""
    config = bot_config("http://x/", users_file, Path("s"), bootstrap_servers="x:1", **trusting(KEYS))
    assert config.trust == ReviewTrust(KEYS.public) and config.credential == KEYS.bot()
    off = bot_config("http://x/", users_file, Path("s"), bootstrap_servers="x:1", trust_off=True)
    assert off.trust == ReviewTrust(None, off=True) and off.credential is None


def test_review_trust_needs_a_key_or_trust_off() -> None:
    with pytest.raises(TrustError, match="sluicegate approvals list needs SLUICEGATE_TRUST_PUBLIC_KEY"):
        ReviewTrust.configure(None, False, who="sluicegate approvals list")
    with pytest.raises(TrustError, match="not an Ed25519 public key"):
        ReviewTrust.configure(KEYS.public[:-4], False, who="x")
    assert ReviewTrust.configure(f" {KEYS.public} ", False, who="x") == ReviewTrust(KEYS.public)
    assert ReviewTrust.configure("", True, who="x") == ReviewTrust(None, off=True)
    assert ReviewTrust.configure(KEYS.public, True, who="x") == ReviewTrust(KEYS.public, off=True), \
        "a configured key is used even with trust off"


def test_reviewer_comes_from_the_credential() -> None:
    lena = KEYS.reviewer("lena")
    assert Reviewer.resolve(str(lena), None, trust_off=False) == Reviewer("lena", lena)
    assert Reviewer.resolve(str(lena), " lena ", trust_off=False) == Reviewer("lena", lena)
    with pytest.raises(ReviewError, match="--reviewer mo is not the reviewer"):
        Reviewer.resolve(str(lena), "mo", trust_off=True)
    with pytest.raises(ReviewError, match=r"needs SLUICEGATE_REVIEWER_CREDENTIAL.*nothing was sent"):
        Reviewer.resolve(None, "lena", trust_off=False)
    with pytest.raises(ReviewError, match="not a reviewer credential"):
        Reviewer.resolve(str(KEYS.bot()), None, trust_off=False)
    assert Reviewer.resolve(None, "lena", trust_off=True) == Reviewer("lena")
    with pytest.raises(ReviewError, match="--reviewer"):
        Reviewer.resolve(None, " ", trust_off=True)


def test_digest_mismatch_names_a_request_showing_other_params() -> None:
    request = make_request()
    assert digest_mismatch(request) is None
    mismatch = digest_mismatch(tampered(request, amount=1))
    assert mismatch is not None and request.intent_digest[:12] in mismatch


def test_config_reports_a_bad_mapping_file(tmp_path: Path) -> None:
    bad = tmp_path / "users.yaml"
    bad.write_text("users: [alice]")
    with pytest.raises(SlackConfigError, match="users"):
        SlackBotConfig.create(
            bot_token=BOT_TOKEN,
            signing_secret=SIGNING_SECRET,
            reviewers_file=bad,
            bootstrap_servers="x:1",
            state_file=Path("s"),
        )


@pytest.mark.parametrize("text", ["users: {U1: ''}", "users: {U1: [a]}", "{}", "users: {U1: alice"])
def test_identity_map_rejects_bad_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(text)
    with pytest.raises(SlackIdentityError):
        SlackIdentityMap.load(path)


def test_identity_map_maps_known_users_only() -> None:
    identities = SlackIdentityMap.from_mapping({"users": {"U1": " alice "}})
    assert identities.reviewer_for("U1") == "alice"
    assert identities.reviewer_for("U2") is None


def _texts(blocks: list[dict[str, object]]) -> str:
    return repr(blocks)


def test_message_shows_the_whole_request() -> None:
    risk = Risk(
        score=0.72,
        factors=(
            RiskFactor(name="amount_deviation", contribution=0.4, detail="49 vs usual 20"),
            RiskFactor(name="action_type", contribution=0.1),
            RiskFactor(name="new_target", contribution=0.2),
            RiskFactor(name="unusual_hour", contribution=0.02),
        ),
    )
    request = make_request(quorum=2).model_copy(update={"risk": risk})
    text, blocks = approval_message(request, MessageStatus())
    shown = _texts(blocks)
    for expected in (
        "refund-bot-1",
        "support",
        "production",
        "payments.refund",
        "create",
        "payments:refunds",
        '"amount": 120.5',
        "0.72",
        "amount_deviation +0.40 (49 vs usual 20)",
        "new_target",
        "refund-review",
        "payments-reviewers (quorum 2)",
        "<!date^",
        str(request.request_id),
    ):
        assert expected in shown, expected
    assert "unusual_hour" not in shown, "only the top three factors"
    assert "payments.refund" in text
    actions = blocks[-1]
    assert actions["type"] == "actions"
    ids = [e["action_id"] for e in actions["elements"]]
    assert ids == [ACTION_APPROVE, ACTION_DENY]
    ref = ActionRef.decode(actions["elements"][0]["value"])
    assert ref is not None and ref.intent_digest == request.intent_digest


def test_huge_params_are_truncated() -> None:
    request = make_request(make_intent(params={"blob": "x" * 10_000}))
    _, blocks = approval_message(request, MessageStatus())
    assert all(len(str(b)) < 4000 for b in blocks)


def test_status_lines_and_buttons() -> None:
    request = make_request(quorum=2)
    progress = MessageStatus().with_approval("alice").with_approval("ALICE")
    _, blocks = approval_message(request, progress)
    assert "Approvals 1 of 2: alice" in _texts(blocks)
    assert blocks[-1]["type"] == "actions"
    _, blocks = approval_message(request, progress.model_copy(update={"outcome": "done"}))
    assert blocks[-1]["type"] != "actions" and "done" in _texts(blocks)
    denied = MessageStatus().with_denial("bob", "too big").with_denial("carol", "other")
    assert (denied.denied_by, denied.deny_reason) == ("bob", "too big")


@pytest.mark.parametrize(
    ("kind", "reasons", "approved_by", "expected"),
    [
        (
            DecisionKind.ALLOW,
            (APPROVAL_GRANTED, "approved by alice, bob"),
            ("alice", "bob"),
            "Approved by alice, bob",
        ),
        (DecisionKind.BLOCK, (APPROVAL_EXPIRED,), (), "Expired"),
        (
            DecisionKind.BLOCK,
            (APPROVAL_DENIED, "denied by bob: too big"),
            (),
            "Denied (denied by bob: too big)",
        ),
        (DecisionKind.BLOCK, ("kill switch",), (), "Blocked: kill switch"),
    ],
)
def test_outcome_text(
    kind: DecisionKind, reasons: tuple[str, ...], approved_by: tuple[str, ...], expected: str
) -> None:
    decision = Decision(
        request_id=make_intent().request_id,
        decision=kind,
        reasons=reasons,
        approved_by=approved_by,
        decided_at=T0,
    )
    assert expected in outcome_text(decision)


def test_deny_modal_carries_the_reference() -> None:
    request = make_request()
    ref = ActionRef(
        request_id=request.request_id, intent_digest=request.intent_digest, channel="C1", ts="1.2"
    )
    view = deny_modal(ref)
    assert ActionRef.decode(view["private_metadata"]) == ref
    assert ActionRef.decode("not json") is None


def test_store_survives_reopen_and_torn_lines(tmp_path: Path) -> None:
    path = tmp_path / "state" / "posted.jsonl"
    store = PostedStore(path)
    first, second = make_request(), make_request()
    store.put(PostedMessage(request=first, channel="C1", ts="1.1"))
    store.put(
        PostedMessage(request=first, channel="C1", ts="1.1", status=MessageStatus(approved_by=("alice",)))
    )
    store.put(PostedMessage(request=second, note="expired"))
    with path.open("a") as handle:
        handle.write('{"request": {"trunc')
    reopened = PostedStore(path)
    item = reopened.get(first.request_id)
    assert item is not None and item.status.approved_by == ("alice",)
    assert second.request_id in reopened
    assert len(path.read_text().splitlines()) == 2, "compacted: one line per request"


async def test_forged_and_stale_signatures_are_rejected(tmp_path: Path, users_file: Path) -> None:
    bot = SlackApprovalBot(
        bot_config(
            "http://127.0.0.1:9/api/", users_file, tmp_path / "p.jsonl", bootstrap_servers="127.0.0.1:9",
            **trusting(KEYS),
        )
    )
    request = make_request()
    value = ActionRef(request_id=request.request_id, intent_digest=request.intent_digest).encode()
    body = "payload=" + urllib.parse.quote(
        json.dumps(block_action(ACTION_APPROVE, value, "UALICE", "C1", "1.1"))
    )
    async with TestClient(TestServer(bot.web_app())) as client:
        forged = await client.post("/slack/events", data=body, headers=sign("not-the-secret", body))
        assert forged.status == 401
        stale_ts = int((T0 - timedelta(days=1)).timestamp())
        stale = await client.post("/slack/events", data=body, headers=sign(SIGNING_SECRET, body, stale_ts))
        assert stale.status == 401
        unsigned = await client.post("/slack/events", data=body)
        assert unsigned.status == 401
        health = await client.get("/healthz")
        assert health.status == 200


def test_store_forgets_long_past_requests(tmp_path: Path) -> None:
    path = tmp_path / "posted.jsonl"
    old, recent = make_request(), make_request(timeout=timedelta(days=30))
    store = PostedStore(path)
    store.put(PostedMessage(request=old, channel="C1", ts="1.1"))
    store.put(PostedMessage(request=recent, channel="C1", ts="1.2"))
    reopened = PostedStore(path, forget_before=T0 + timedelta(days=1))
    assert old.request_id not in reopened and recent.request_id in reopened
