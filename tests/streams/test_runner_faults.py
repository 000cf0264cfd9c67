"""The runner under a failing producer, on a real broker: a send the producer gives up on is never
committed past. The worker crashes, and the restart redelivers the record and sends its outputs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.kafka.admin import ensure_topics
from schemas import ApprovalVerdict, Decision, DecisionKind, TopicNames, VerdictKind
from schemas.decision import APPROVAL_DENIED
from streams.app import WorkerConfig, build_runner
from streams.metrics import Metrics
from streams.policy_source import PolicySource, publish_policy
from streams.runtime.runner import Runner
from streams.topology import WorkerTopics
from tests.streams.harness import Client, make_intent

pytestmark = pytest.mark.integration
POLICY = """
policy: runner_faults
default: BLOCK
rules:
  - id: refund-review
    match: {tool: payments.refund}
    decision: REQUIRE_APPROVAL
    approval: {group: payments-reviewers, timeout: 10m}
"""


class _Worker:
    """The runner and policy source of one worker, in this process."""

    def __init__(self, config: WorkerConfig, topics: WorkerTopics) -> None:
        metrics = Metrics()
        self.policies = PolicySource(config.bootstrap, topics.names.policies, metrics)
        self.runner, _ = build_runner(config, topics, self.policies, metrics, config.trust())
        self.reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Runner:
        self.reader = asyncio.create_task(self.policies.run())
        await self.runner.start()
        await asyncio.wait_for(self.runner.restored.wait(), 60)
        return self.runner

    async def __aexit__(self, *exc_info: object) -> None:
        await self.runner.stop()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


def _fail_sends_to(runner: Runner, topic: str) -> None:
    """Make the runner's producer give up on every send to ``topic`` (as after its delivery timeout), of a
    record or of a batch."""
    assert runner.producer is not None
    send: Callable[..., Any] = runner.producer.send

    async def failing(to: str, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        if to != topic:
            return await send(to, *args, **kwargs)
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(RuntimeError(f"delivery to {to} timed out"))
        return failed

    runner.producer.send = failing  # type: ignore[method-assign]
    send_batch: Callable[..., Any] = runner.producer.send_batch

    async def failing_batch(batch: Any, to: str, **kwargs: Any) -> asyncio.Future[Any]:
        if to != topic:
            return await send_batch(batch, to, **kwargs)
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(RuntimeError(f"delivery to {to} timed out"))
        return failed

    runner.producer.send_batch = failing_batch  # type: ignore[method-assign]


async def _results(bootstrap: str, topic: str) -> list[Decision]:
    """Every decision on the approval-results topic so far."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        found: list[Decision] = []
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [Decision.model_validate_json(r.value) for r in records]
        return found
    finally:
        await consumer.stop()


@pytest.fixture
async def deployment(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> AsyncIterator[WorkerConfig]:
    reviewers = tmp_path / "reviewers.yaml"
    reviewers.write_text("groups: {payments-reviewers: [alice]}\n")
    config = WorkerConfig(bootstrap=kafka_bootstrap, topic_prefix=unique_name, partitions=1,
                          workdir=tmp_path / "worker", reviewers_file=reviewers, trust_off=True)
    topics = WorkerTopics(TopicNames(unique_name), 1)
    await ensure_topics(kafka_bootstrap, topics.specs())
    await publish_policy(kafka_bootstrap, topics.names.policies, POLICY)
    yield config


async def test_a_failed_send_of_an_approval_final_is_not_committed_past_and_is_redelivered(
    deployment: WorkerConfig,
) -> None:
    topics = WorkerTopics(TopicNames(deployment.topic_prefix), 1)
    n = topics.names
    intent = make_intent("faulty-agent", params={"amount": 500}, agent_owner="team-a")
    async with Client(deployment.bootstrap, deployment.topic_prefix) as client:
        worker = _Worker(deployment, topics)
        async with worker as runner:
            await client.send(intent)
            pending = await client.decision(intent)
            assert (pending.decision, pending.final) == (DecisionKind.REQUIRE_APPROVAL, False)
            await client.wait_for(lambda: intent.request_id in client.requests, what="approval request")
            request = client.requests[intent.request_id]
            _fail_sends_to(runner, n.decisions)
            deny = ApprovalVerdict(request_id=request.request_id, intent_digest=request.intent_digest,
                                   reviewer="alice", verdict=VerdictKind.DENY, reason="no",
                                   decided_at=datetime.now(UTC))
            await client._producer.send_and_wait(n.approvals, deny.model_dump_json().encode(),
                                                 key=str(request.request_id).encode())
            await asyncio.wait_for(runner._crashed.wait(), 30)
            assert "gave up on a send" in str(runner._crash_reason)
            assert runner.consumer is not None
            committed = await runner.consumer.committed(TopicPartition(n.approvals, 0))
            assert committed is None or committed == 0  # not past the verdict (offset 0)
        assert not any(d.final for d in client.decisions[intent.request_id])

        # The restart redelivers the verdict: its final goes out this time.
        async with _Worker(deployment, topics):
            await client.wait_for(lambda: any(d.final for d in client.decisions[intent.request_id]),
                                  what="the final decision")
        finals = [d for d in client.decisions[intent.request_id] if d.final]
        assert {(d.decision, d.reasons[0]) for d in finals} == {(DecisionKind.BLOCK, APPROVAL_DENIED)}
        assert intent.request_id in [d.request_id for d in await _results(deployment.bootstrap,
                                                                        n.approval_results)]
