"""What a worker refuses: topics partitioned unlike its state (it does not start), intents stamped far
from its clock (BLOCK)."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.kafka.admin import TopicSpec, ensure_topics
from schemas import DecisionKind
from streams.policy_source import publish_policy
from tests.streams.harness import POLICIES, Client, WorkerProcess, make_intent

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("which", ["intents", "changelog"])
async def test_a_worker_refuses_a_topic_partitioned_unlike_its_state(kafka_bootstrap: str, tmp_path: Path,
                                                                      which: str) -> None:
    worker = WorkerProcess(kafka_bootstrap, "t" + secrets.token_hex(5), tmp_path, partitions=3)
    topic = worker.names.intents if which == "intents" else f"{worker.prefix}-worker-agent-state-changelog"
    await ensure_topics(kafka_bootstrap, [TopicSpec(topic, 2)])  # e.g. auto-created, or an older deployment
    worker.start()
    assert worker.proc is not None
    code = await asyncio.to_thread(worker.proc.wait, 120)
    log = worker.log_tail()
    assert code != 0, log
    assert f"{topic} has 2 partitions, not 3" in log
    assert "--partitions" in log


async def test_a_worker_blocks_intents_stamped_far_from_its_clock(kafka_bootstrap: str,
                                                                  tmp_path: Path) -> None:
    worker = WorkerProcess(kafka_bootstrap, "t" + secrets.token_hex(5), tmp_path, max_event_skew_s=300)
    text = (POLICIES / "fleet_budget.yaml").read_text()
    await publish_policy(kafka_bootstrap, worker.names.policies, text, "fleet_budget.yaml")
    worker.start()
    try:
        await worker.wait_ready()
        async with Client(kafka_bootstrap, worker.prefix) as client:
            now = datetime.now(UTC)
            ahead = await client.decide(make_intent("skew-a", occurred_at=now + timedelta(hours=1)))
            assert ahead.decision is DecisionKind.BLOCK and ahead.reasons[0].startswith(
                "event_time_skew: occurred_at is 3,600 s after the intent reached Kafka (at most 300 s)")
            current = await client.decide(make_intent("skew-a", occurred_at=now))
            assert current.decision is DecisionKind.ALLOW
    finally:
        worker.stop()
