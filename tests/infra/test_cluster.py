"""Replication on a 3-broker KRaft cluster on loopback: every topic with replication factor 3 and
min.insync.replicas 2. One broker is SIGKILLed under traffic through a real worker: every intent still
gets its decision, and a worker that then restores its tables from the changelogs (a fresh work dir)
resumes the agents' limits where they were, not from zero."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError

from infra.kafka.cluster import cluster_configs, start_cluster, stop_cluster
from infra.kafka.launcher import BrokerConfig, broker_status
from schemas import DecisionKind, TopicNames
from sluicegate.settings import Settings
from streams.policy_source import publish
from tests.streams.harness import Client, WorkerProcess, make_intent

pytestmark = pytest.mark.integration
LIMIT = 6
POLICY = f"""
policy: replicated
default: BLOCK
rules:
  - {{id: refunds, match: {{tool: payments.refund}}, decision: ALLOW}}
limits:
  - {{id: refunds-per-agent, match: {{tool: payments.refund}}, key: agent, window: 1h, count: {LIMIT},
     decision: BLOCK}}
"""
AGENTS = [f"agent-{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
REPLICATED = {"SLUICEGATE_TRUST_OFF": "1", "SLUICEGATE_KAFKA_REPLICATION_FACTOR": "3",
              "SLUICEGATE_KAFKA_MIN_INSYNC_REPLICAS": "2"}
TIMEOUT_S = 240.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, list[BrokerConfig]]]:
    settings = Settings()
    configs = cluster_configs(tmp_path / "cluster", settings.artifact_cache_dir.resolve(),
                              settings.kafka_version)
    try:
        bootstrap = start_cluster(configs)
        yield bootstrap, configs
    finally:
        stop_cluster(configs)


async def send_until_sent(client: Client, count: int) -> list[uuid.UUID]:
    """``count`` refunds per agent, one at a time (a send the failover interrupts is sent again: the
    worker decides a request id once)."""
    sent = []
    for _ in range(count):
        for agent in AGENTS:
            intent = make_intent(agent)
            for attempt in range(20):
                try:
                    await client.send(intent)
                    break
                except KafkaError:
                    if attempt == 19:
                        raise
                    await asyncio.sleep(0.5)
            sent.append(intent.request_id)
    return sent


def allowed(client: Client, requests: list[uuid.UUID], agent: str) -> int:
    """How many of ``agent``'s requests were allowed. A decision the failover made a worker publish twice
    (its producer retried, or it re-decided from its last commit) is one answer, given twice."""
    return sum(any(d.final and d.decision is DecisionKind.ALLOW for d in client.decisions[r])
               for r in requests if client.decisions[r][0].agent_id == agent)


def conflicting(client: Client, requests: list[uuid.UUID]) -> dict[uuid.UUID, set[str]]:
    """Requests whose final decisions disagree (never allowed: a repeat must repeat the answer)."""
    kinds = {r: {d.decision.value for d in client.decisions[r] if d.final} for r in requests}
    return {r: k for r, k in kinds.items() if len(k) > 1}


async def test_one_broker_killed_under_traffic_loses_no_decision_and_resets_no_limit(
    cluster: tuple[str, list[BrokerConfig]], tmp_path: Path, unique_name: str,
) -> None:
    bootstrap, configs = cluster
    names = TopicNames(unique_name)
    await publish(bootstrap, names.policies, POLICY, "replicated.yaml", replication=(3, 2))
    worker = WorkerProcess(bootstrap, unique_name, tmp_path / "worker-1", trust=REPLICATED)
    worker.start()
    try:
        await worker.wait_ready(TIMEOUT_S)
        async with Client(bootstrap, unique_name) as client:
            traffic = asyncio.create_task(send_until_sent(client, 4))
            await client.wait_for(lambda: len(client.decisions) >= len(AGENTS), TIMEOUT_S, "first decisions")
            victim = broker_status(configs[0].data_dir).pid
            assert victim is not None
            os.killpg(victim, signal.SIGKILL)  # under traffic: no clean shutdown, no leadership handover
            before = await asyncio.wait_for(traffic, TIMEOUT_S)
            await client.wait_for(lambda: all(any(d.final for d in client.decisions[r]) for r in before),
                                  TIMEOUT_S, "a final decision for every intent sent around the kill")
            assert conflicting(client, before) == {}
            assert {agent: allowed(client, before, agent) for agent in AGENTS} == dict.fromkeys(AGENTS, 4)

            worker.stop()  # the next worker restores every table from the surviving replicas
            worker = WorkerProcess(bootstrap, unique_name, tmp_path / "worker-2", trust=REPLICATED)
            worker.start()
            await worker.wait_ready(TIMEOUT_S)
            after = await send_until_sent(client, 4)
            await client.wait_for(lambda: all(any(d.final for d in client.decisions[r]) for r in after),
                                  TIMEOUT_S, "a final decision for every intent after the restore")
            assert conflicting(client, after) == {}
            assert {agent: allowed(client, after, agent) for agent in AGENTS} == {
                agent: LIMIT - 4 for agent in AGENTS}, worker.log_tail()
    finally:
        worker.stop()
