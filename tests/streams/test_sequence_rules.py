"""Sequence rules on the real worker: an agent that tried to drop a schema stays contained across a
worker SIGKILL (its trail is restored from the changelog), and the containment ends on time."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from schemas import DecisionKind, Intent
from streams.topology import worker_app_id
from tests.streams.conftest import start_worker
from tests.streams.harness import Client, WorkerProcess, make_intent

pytestmark = pytest.mark.integration
ALLOW, BLOCK = DecisionKind.ALLOW, DecisionKind.BLOCK
CONTAIN = "contain-after-schema-drop"


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A worker deciding with ``sequences.yaml``."""
    process = start_worker(kafka_bootstrap, tmp_path_factory.mktemp("sequences"), "sequences.yaml")
    try:
        asyncio.run(process.wait_ready())
        yield process
    finally:
        process.stop()


def _db(agent: str, tool: str, action: str, target: str, at: datetime) -> Intent:
    """A database action of ``agent`` at ``at``."""
    return make_intent(agent, agent_role="assistant", tool=tool, action=action, target=target, params={},
                       occurred_at=at)


async def _committed(worker: WorkerProcess, count: int, timeout_s: float = 60.0) -> None:
    """Wait until the workers' group has committed ``count`` intents of this prefix."""
    group, topic = worker_app_id(worker.prefix), worker.names.intents
    deadline = time.monotonic() + timeout_s
    admin = AIOKafkaAdminClient(bootstrap_servers=worker.bootstrap)
    await admin.start()
    try:
        while True:
            offsets = await admin.list_consumer_group_offsets(group)
            if sum(max(0, meta.offset) for tp, meta in offsets.items() if tp.topic == topic) >= count:
                return
            assert time.monotonic() < deadline, f"{count} intents not committed: {offsets}"
            await asyncio.sleep(0.2)  # nothing announces a commit
    finally:
        await admin.close()


async def test_a_contained_agent_stays_contained_across_a_worker_sigkill(worker: WorkerProcess) -> None:
    t0 = datetime(2031, 3, 3, 9, tzinfo=UTC)
    agent, other = f"seq-{uuid.uuid4().hex[:8]}", f"seq-{uuid.uuid4().hex[:8]}"
    async with Client(worker.bootstrap, worker.prefix) as client:
        drop = _db(agent, "db.schema.drop", "delete", "database:billing", t0)
        blocked = await client.decide(drop)
        assert (blocked.decision, blocked.determining) == (BLOCK, ("schema-drop-blocked",))
        write = _db(agent, "db.rows.insert", "create", "database:users", t0 + timedelta(minutes=1))
        contained = await client.decide(write)
        assert (contained.decision, contained.determining) == (BLOCK, (CONTAIN,))

        await _committed(worker, 2)  # so the restart restores the trail, not a redelivery
        worker.kill()
        worker.start()
        await worker.wait_ready()

        def update(agent_id: str, offset: timedelta) -> Intent:
            return _db(agent_id, "db.rows.update", "update", "database:users", t0 + offset)

        still = await client.decide(update(agent, timedelta(minutes=59, seconds=59, milliseconds=999)))
        assert (still.decision, still.determining) == (BLOCK, (CONTAIN,)), still.reasons
        assert "earlier action at 2031-03-03T09:00:00.000" in still.reasons[-1]
        assert (await client.decide(update(other, timedelta(minutes=30)))).decision is ALLOW
        free = await client.decide(update(agent, timedelta(hours=1)))
        assert (free.decision, free.determining) == (ALLOW, ("db-write",))
        for request in (drop.request_id, write.request_id):  # committed: decided once, not again
            assert [d.decision for d in client.decisions[request]] == [BLOCK]
