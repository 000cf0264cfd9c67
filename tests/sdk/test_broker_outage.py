"""Broker stopped -> the SDK BLOCKs within its deadline; broker back -> it recovers (dedicated broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from infra.kafka import BrokerConfig, start_broker, stop_broker
from schemas import Decision, DecisionKind, Intent, TopicNames
from sluicegate import GOVERNANCE_UNAVAILABLE, Backoff, BreakerState, CircuitBreaker, Gate, Settings
from tests.sdk.kafka_helpers import Responder, create_topics, dedicated_broker

pytestmark = pytest.mark.integration

PORTS = range(19410, 19500)  # this test's share of the SDK's hand-started port range
DEADLINE_S = 1.0
RECOVERY_BOUND_S = 90.0
READ: dict[str, Any] = {"tool": "crm.get_account", "action": "read", "target": "crm:accounts"}


def allow_all(intent: Intent) -> list[Decision]:
    return [Decision(request_id=intent.request_id, agent_id=intent.agent_id, decision=DecisionKind.ALLOW,
                     decided_at=datetime.now(UTC))]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerConfig]:
    with dedicated_broker(tmp_path, PORTS) as config:
        yield config


async def test_broker_down_blocks_within_the_deadline_and_recovers(broker: BrokerConfig) -> None:
    bootstrap = f"127.0.0.1:{broker.port}"
    topics = TopicNames("outage")
    await create_topics(bootstrap, topics)
    settings = Settings(
        kafka_bootstrap_servers=bootstrap, topic_prefix=topics.prefix, decision_timeout_s=DEADLINE_S
    )
    breaker = CircuitBreaker(failure_threshold=2, cooldown=Backoff(initial_s=0.5, max_s=2.0, jitter=0.2))
    loop = asyncio.get_running_loop()
    async with Responder(bootstrap, topics, allow_all), \
            Gate(settings, agent_id="a1", agent_role="support", environment="dev", breaker=breaker) as gate:
        assert (await gate.check(**READ)).decision is DecisionKind.ALLOW

        await asyncio.to_thread(stop_broker, broker.data_dir)
        for _ in range(3):
            started = loop.time()
            decision = await gate.check(**READ)
            assert loop.time() - started < DEADLINE_S + 0.5
            assert decision.decision is DecisionKind.BLOCK
            assert decision.reasons[0].startswith(f"{GOVERNANCE_UNAVAILABLE}: ")
        assert breaker.state is not BreakerState.CLOSED
        assert "circuit open" in decision.reasons[0]

        await asyncio.to_thread(start_broker, broker)
        async with asyncio.timeout(RECOVERY_BOUND_S):
            while (await gate.check(**READ)).decision is not DecisionKind.ALLOW:
                await asyncio.sleep(breaker.retry_in_s)  # the breaker's cool-down is the thing awaited
        assert BreakerState(breaker.state) is BreakerState.CLOSED  # re-read (mypy narrows properties)
