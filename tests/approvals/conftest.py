"""Fixtures for the Slack bot tests: the fake Slack Web API and bots wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from consumers.slack_bot import SlackApprovalBot, SlackBotConfig
from schemas import TopicNames
from tests.approvals.slack_fake import FakeSlackApi

BOT_TOKEN = "xoxb-test-token"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
USERS_YAML = "users:\n  UALICE: alice\n  UBOB: bob\n"

BotFactory = Callable[..., Awaitable[SlackApprovalBot]]


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


def bot_config(api_url: str, users_file: Path, state_file: Path, **options: object) -> SlackBotConfig:
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
    fake_slack: FakeSlackApi, users_file: Path, tmp_path: Path, kafka_bootstrap: str, unique_name: str
) -> AsyncIterator[BotFactory]:
    """Start bots on the real broker (topics under ``unique_name``); all are stopped at the end."""
    bots: list[SlackApprovalBot] = []

    async def start(state_file: Path | None = None, group_id: str | None = None) -> SlackApprovalBot:
        bot = SlackApprovalBot(
            bot_config(
                fake_slack.url,
                users_file,
                state_file or tmp_path / "posted.jsonl",
                bootstrap_servers=kafka_bootstrap,
                topics=TopicNames(unique_name),
                group_id=group_id or f"{unique_name}-bot",
                default_channel="#fallback",
            )
        )
        await bot.start()
        bots.append(bot)
        return bot

    yield start
    for bot in bots:
        await bot.stop()
