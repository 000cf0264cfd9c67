"""A worker refuses to start on topics partitioned unlike its state, and says why."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from infra.kafka.admin import TopicSpec, ensure_topics
from tests.streams.harness import WorkerProcess

pytestmark = pytest.mark.integration


async def test_a_worker_refuses_an_intents_topic_with_other_partitions(kafka_bootstrap: str,
                                                                      tmp_path: Path) -> None:
    worker = WorkerProcess(kafka_bootstrap, "t" + secrets.token_hex(5), tmp_path, partitions=3)
    await ensure_topics(kafka_bootstrap, [TopicSpec(worker.names.intents, 2)])  # e.g. auto-created earlier
    worker.start()
    assert worker.proc is not None
    code = await asyncio.to_thread(worker.proc.wait, 120)
    log = worker.log_tail()
    assert code != 0, log
    assert f"{worker.names.intents} has 2 partitions, not 3" in log
    assert "--partitions" in log
