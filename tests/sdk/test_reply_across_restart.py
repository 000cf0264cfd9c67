"""A decision that reaches the broker only after it restarts still reaches the call waiting for it.

The chaos runs J and K counted ALLOWs on the decisions topic that their agents never received, all around
a broker restart, and the SDK's group-less reply consumer (``auto_offset_reset="latest"``) was suspected
of skipping records over the restart. This pins the guarantee on a real broker: the gate has read
decisions before (a position to lose), the worker's decision is sent while the broker is down (its
producer holds it) and appended as the first record after the restart, as in run J; the waiting call
gets it. (The runs' misses were decisions appended after their agents had stopped waiting:
docs/faults.md.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra.kafka import BrokerConfig, start_broker, stop_broker
from schemas import Decision, DecisionKind, Intent, TopicNames
from sluicegate import Gate, Settings
from tests.sdk.kafka_helpers import create_topics, dedicated_broker

pytestmark = pytest.mark.integration

PORTS = range(19600, 19650)  # this test's share of the SDK's hand-started port range
WAIT_S = 240.0  # the call outlives the broker's restart (a minute or more on a loaded machine)
READ: dict[str, Any] = {"tool": "crm.get_account", "action": "read", "target": "crm:accounts"}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerConfig]:
    with dedicated_broker(tmp_path, PORTS) as config:
        yield config


def _allow(intent: Intent) -> bytes:
    return Decision(request_id=intent.request_id, agent_id=intent.agent_id, decision=DecisionKind.ALLOW,
                    decided_at=datetime.now(UTC)).model_dump_json().encode()


async def _next_intent(consumer: AIOKafkaConsumer) -> Intent:
    while True:
        for records in (await consumer.getmany(timeout_ms=500)).values():
            for record in records:
                return Intent.model_validate_json(record.value or b"")


async def test_a_decision_appended_after_a_broker_restart_reaches_the_waiting_call(
    broker: BrokerConfig,
) -> None:
    bootstrap = f"127.0.0.1:{broker.port}"
    topics = TopicNames("restart")
    await create_topics(bootstrap, topics, partitions=1)
    settings = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=topics.prefix,
                        decision_timeout_s=WAIT_S)
    intents = AIOKafkaConsumer(topics.intents, bootstrap_servers=bootstrap, group_id=None,
                               auto_offset_reset="earliest", fetch_max_wait_ms=100)
    worker = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, request_timeout_ms=int(WAIT_S * 1000))
    await intents.start()
    await worker.start()
    try:
        async with Gate(settings, agent_id="a1", agent_role="support", environment="dev") as gate:
            first = asyncio.create_task(gate.check(**READ))
            await worker.send_and_wait(topics.decisions, _allow(await _next_intent(intents)), key=b"a1")
            assert (await first).decision is DecisionKind.ALLOW  # the reply partition has a position

            waiting = asyncio.create_task(gate.check(**READ))
            intent = await _next_intent(intents)
            await asyncio.to_thread(stop_broker, broker.data_dir)
            sent = await worker.send(topics.decisions, _allow(intent), key=b"a1")  # held by the producer
            await asyncio.to_thread(start_broker, broker)
            assert (await sent).offset == 1  # appended after the restart, the first record since

            decision = await waiting
            assert decision.request_id == intent.request_id
            assert decision.decision is DecisionKind.ALLOW, decision.reasons
    finally:
        await worker.stop()
        await intents.stop()
