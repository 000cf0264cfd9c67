"""Two workers of one deployment on a real broker: a worker joining mid-stream takes a share of the
partitions, and a worker killed mid-stream hands its share, with the windows behind it, to the other.
Whoever decides, each intent gets one answer and no budget is counted twice or lost."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from schemas import DecisionKind
from tests.streams.conftest import start_worker
from tests.streams.harness import Client, WorkerProcess, make_intent

pytestmark = pytest.mark.integration
ALLOW, APPROVAL, BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK
# 30 refunds of 20 per agent, 20 allowed each by the agent limit: 12 x 20 x 20 = 4,800 of the 5,000 budget.
AGENTS, REFUNDS, AMOUNT = 12, 30, 20


@pytest.fixture(scope="module")
def pair(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory,
         ) -> Iterator[tuple[WorkerProcess, WorkerProcess]]:
    """Two workers of one prefix (one consumer group); only the first is started."""
    first = start_worker(kafka_bootstrap, tmp_path_factory.mktemp("pair-a"), "fleet_budget.yaml")
    second = WorkerProcess(kafka_bootstrap, first.prefix, tmp_path_factory.mktemp("pair-b"))
    try:
        asyncio.run(first.wait_ready())
        yield first, second
    finally:
        second.stop()
        first.stop()


async def test_join_and_kill_mid_stream_keep_every_answer_and_every_budget(
    pair: tuple[WorkerProcess, WorkerProcess],
) -> None:
    first, second = pair
    async with Client(first.bootstrap, first.prefix) as client:
        t0 = datetime(2030, 6, 1, 12, tzinfo=UTC)
        agents = [f"pair-{uuid.uuid4().hex[:8]}" for _ in range(AGENTS)]
        intents = [make_intent(a, params={"amount": AMOUNT}, occurred_at=t0 + timedelta(seconds=i))
                   for i in range(REFUNDS) for a in agents]
        thirds = [intents[k * len(intents) // 3:(k + 1) * len(intents) // 3] for k in range(3)]

        for intent in thirds[0]:
            await client.send(intent)
        second.start()  # joins the group mid-stream: a rebalance while the first third is decided
        for intent in thirds[1]:
            await client.send(intent)
        await second.wait_ready()
        half = len(intents) // 2
        await client.wait_for(lambda: sum(i.request_id in client.decisions for i in intents) >= half,
                              what="half of the intents decided by the pair")
        first.kill()  # the survivor restores the dead worker's partitions from the changelogs
        for intent in thirds[2]:
            await client.send(intent)
        await client.wait_for(lambda: all(i.request_id in client.decisions for i in intents),
                              timeout_s=90, what="every intent decided")
        for intent in intents:
            answers = {d.decision for d in client.decisions[intent.request_id]}
            assert len(answers) == 1, f"conflicting answers for {intent.request_id}: {answers}"
        first_answers = [client.decisions[i.request_id][0] for i in intents]
        allowed = Counter(d.agent_id for d in first_answers if d.decision is ALLOW)
        assert allowed == dict.fromkeys(agents, 20)
        assert all(d.rules[-1] == "refunds-per-agent-per-10m"
                   for d in first_answers if d.decision is BLOCK)
        # The fleet window holds exactly 4,800: two refunds of 100 fit, then the budget is spent.
        late = t0 + timedelta(minutes=1)
        probe = [await client.decide(make_intent(f"late-{k}", params={"amount": amount}, occurred_at=late))
                 for k, amount in enumerate((100, 100, 1))]
        assert [d.decision for d in probe] == [ALLOW, ALLOW, APPROVAL]
        assert probe[2].rules[-1] == "fleet-refunds-5000-per-24h"
        state = await second.wait_ready()
        assert state["partitions"] > 0
