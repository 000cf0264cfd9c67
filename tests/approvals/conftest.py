"""Fixtures for the approval tests: the workers' keys, the fake Slack Web API and bots wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from consumers.slack_bot import SlackApprovalBot, SlackBotConfig
from schemas import TopicNames
from tests.approvals.factories import WorkerKeys
from tests.approvals.slack_fake import FakeSlackApi

BOT_TOKEN = "xoxb-test-token"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
USERS_YAML = "users:\n  UALICE: alice\n  UBOB: bob\n"
BOT_NAME = "slack-bot"

BotFactory = Callable[..., Awaitable[SlackApprovalBot]]


@pytest.fixture
def keys() -> WorkerKeys:
    """This test's deployment: a fresh key ring and request signer, as ``sluicegate trust init`` makes."""
    return WorkerKeys()


def trusting(keys: WorkerKeys) -> dict[str, Any]:
    """The bot's trust options for ``keys``: the workers' public key and its bot credential."""
    return {"trust_public_key": keys.public, "bot_credential": str(keys.bot(BOT_NAME))}


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlackApi]:
    api = FakeSlackApi()
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "slack-users.yaml"
    path.write_text(USERS_YAML)
    return path


def bot_config(api_url: str, users_file: Path, state_file: Path, **options: Any) -> SlackBotConfig:
    """A bot on ``api_url``; ``options`` include its trust (:func:`trusting`, or ``trust_off=True``)."""
    return SlackBotConfig.create(
        bot_token=BOT_TOKEN,
        signing_secret=SIGNING_SECRET,
        reviewers_file=users_file,
        state_file=state_file,
        api_url=api_url,
        host="127.0.0.1",
        port=0,
        **options,
    )


@pytest.fixture
async def start_bot(
    fake_slack: FakeSlackApi, users_file: Path, tmp_path: Path, kafka_bootstrap: str, unique_name: str,
    keys: WorkerKeys,
) -> AsyncIterator[BotFactory]:
    """Start bots on the real broker (topics under ``unique_name``), trusting ``keys`` unless ``trust``
    options are given; all are stopped at the end."""
    bots: list[SlackApprovalBot] = []

    async def start(
        state_file: Path | None = None, group_id: str | None = None, trust: dict[str, Any] | None = None
    ) -> SlackApprovalBot:
        bot = SlackApprovalBot(
            bot_config(
                fake_slack.url,
                users_file,
                state_file or tmp_path / "posted.jsonl",
                bootstrap_servers=kafka_bootstrap,
                topics=TopicNames(unique_name),
                group_id=group_id or f"{unique_name}-bot",
                default_channel="#fallback",
                **(trusting(keys) if trust is None else trust),
            )
        )
        await bot.start()
        bots.append(bot)
        return bot

    yield start
    for bot in bots:
        await bot.stop()
