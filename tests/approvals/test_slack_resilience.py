"""The Slack bot under failures, on the real broker and the Slack fake: rate limits and 5xx answers are
waited out (per Retry-After) and every request is posted once; a record it cannot handle is retried, then
dead-lettered, and no offset is committed past a record that is neither handled nor dead-lettered."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from schemas import ApprovalRequest, TopicNames
from tests.approvals.conftest import BotFactory
from tests.approvals.factories import WorkerKeys
from tests.approvals.kafka_util import collect_records, create_topics
from tests.approvals.slack_fake import FakeSlackApi
from tests.approvals.test_slack_bot import for_request, future_request, publish

pytestmark = pytest.mark.integration
GRAIN_S = 0.05
"""Slack of the loop clock when comparing a wait with the Retry-After asked for."""


@pytest.fixture
async def topics(kafka_bootstrap: str, unique_name: str) -> TopicNames:
    names = TopicNames(unique_name)
    await create_topics(kafka_bootstrap, names)
    return names


def posts_of(fake: FakeSlackApi, requests: list[ApprovalRequest]) -> list[int]:
    """How many messages were posted for each request."""
    posts = [str(params["blocks"]) for params in fake.of("chat.postMessage")]
    return [sum(str(request.request_id) in post for post in posts) for request in requests]


async def committed(bootstrap: str, group: str, topic: str) -> int | None:
    """The offset ``group`` committed on partition 0 of ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        offset = await consumer.committed(TopicPartition(topic, 0))
        return None if offset is None else int(offset)
    finally:
        await consumer.stop()


async def logged(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 60) -> None:
    """Wait until a log record containing ``text`` was emitted."""
    async def seen() -> None:
        while not any(text in record.getMessage() for record in caplog.records):
            await asyncio.sleep(GRAIN_S)

    await asyncio.wait_for(seen(), timeout)


async def test_rate_limits_and_server_errors_are_waited_out_and_each_request_posted_once(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames,
    keys: WorkerKeys, tmp_path: Path, unique_name: str,
) -> None:
    refusals = [(429, {"Retry-After": "2"}), (503, {}), (429, {"Retry-After": "1"})]
    fake_slack.refuse["chat.postMessage"] = refusals
    state = tmp_path / "posted.jsonl"
    bot = await start_bot(state_file=state)
    requests = [future_request() for _ in range(3)]
    for request in requests:
        await publish(kafka_bootstrap, topics, request, keys)
    for request in requests:
        await fake_slack.wait_for("chat.postMessage", for_request(request), timeout=60)
    assert posts_of(fake_slack, requests) == [1, 1, 1]
    answers = [(status, at) for method, status, at in fake_slack.answered if method == "chat.postMessage"]
    assert [status for status, _ in answers[:4]] == [429, 503, 429, 200]
    assert answers[1][1] - answers[0][1] >= 2 - GRAIN_S, "the first retry waited the Retry-After of 2 s"
    assert answers[3][1] - answers[2][1] >= 1 - GRAIN_S, "the third waited the Retry-After of 1 s"

    await bot.stop()  # a new bot in a new group reads every request again: the store posts none twice
    await start_bot(state_file=state, group_id=f"{unique_name}-again")
    last = future_request()
    await publish(kafka_bootstrap, topics, last, keys)
    await fake_slack.wait_for("chat.postMessage", for_request(last))  # one partition: after the others
    assert posts_of(fake_slack, [*requests, last]) == [1, 1, 1, 1]


async def test_a_record_that_keeps_failing_is_dead_lettered_and_the_bot_goes_on(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames,
    keys: WorkerKeys, tmp_path: Path, unique_name: str,
) -> None:
    state = tmp_path / "posted.jsonl"
    bot = await start_bot(state_file=state)
    state.mkdir()  # the posted store cannot be written: handling fails after the post
    first = future_request()
    await publish(kafka_bootstrap, topics, first, keys)
    [letter] = await collect_records(kafka_bootstrap, topics.dead_letter, 1, timeout=60)
    headers = {name: value.decode() for name, value in letter.headers}
    assert "IsADirectoryError" in headers["error"]
    assert (headers["source_topic"], headers["source_partition"], headers["source_offset"]) == (
        topics.approval_requests, "0", "0")
    assert letter.key == str(first.request_id).encode()

    state.rmdir()
    second = future_request()
    await publish(kafka_bootstrap, topics, second, keys)
    await fake_slack.wait_for("chat.postMessage", for_request(second))
    await bot.stop()
    assert posts_of(fake_slack, [first, second]) == [1, 1], "the retries did not post the first again"
    assert await committed(kafka_bootstrap, f"{unique_name}-bot", topics.approval_requests) == 2


async def test_no_offset_is_committed_past_a_record_neither_handled_nor_dead_lettered(
    start_bot: BotFactory, fake_slack: FakeSlackApi, kafka_bootstrap: str, topics: TopicNames,
    keys: WorkerKeys, tmp_path: Path, unique_name: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="consumers.slack_bot")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:  # the dead-letter topic refuses the record as too large: parking it fails too
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topics.dead_letter,
                                                  {"max.message.bytes": "100"})])
    finally:
        await admin.close()
    state = tmp_path / "posted.jsonl"
    bot = await start_bot(state_file=state)
    state.mkdir()
    first = future_request()
    await publish(kafka_bootstrap, topics, first, keys)
    await logged(caplog, "will be read again")
    group = f"{unique_name}-bot"
    assert await committed(kafka_bootstrap, group, topics.approval_requests) in (None, 0)

    state.rmdir()  # the disk is back: the record read again is handled (its post is not repeated)
    second = future_request()
    await publish(kafka_bootstrap, topics, second, keys)
    await fake_slack.wait_for("chat.postMessage", for_request(second), timeout=60)
    await bot.stop()
    assert posts_of(fake_slack, [first, second]) == [1, 1]
    assert await committed(kafka_bootstrap, group, topics.approval_requests) == 2
    assert state.read_text().count(str(first.request_id)) >= 1, "the first post is recorded after all"
