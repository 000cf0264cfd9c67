"""A zombie worker on a real broker: the worker owning the only partition is SIGSTOPped past the session
timeout, the other takes the partition over and decides on, and the zombie is woken after an approval
it had open was approved by the new owner and its deadline passed. The zombie's clock says "expire it";
fenced, it sends nothing: no request has two different finals, and the agent's limit counts exactly."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from schemas import ApprovalVerdict, DecisionKind, VerdictKind
from streams.policy_source import publish_policy
from streams.stages.approval import EXPIRY_GRACE_MS
from streams.topology import worker_app_id
from tests.streams.harness import Client, WorkerProcess, make_intent

pytestmark = pytest.mark.integration
ALLOW, BLOCK = DecisionKind.ALLOW, DecisionKind.BLOCK
APPROVAL_TIMEOUT_S = 30
LIMIT = 5
POLICY = f"""
policy: zombie
default: BLOCK
rules:
  - id: small-refund
    match: {{tool: payments.refund}}
    when: {{field: params.amount, op: lte, value: 100}}
    decision: ALLOW
  - id: large-refund-review
    match: {{tool: payments.refund}}
    when: {{field: params.amount, op: gt, value: 100}}
    decision: REQUIRE_APPROVAL
    approval: {{group: payments-reviewers, timeout: {APPROVAL_TIMEOUT_S}s}}
limits:
  - id: refunds-per-agent
    match: {{tool: payments.refund}}
    key: agent
    window: 1h
    count: {LIMIT}
    decision: BLOCK
"""


@pytest.fixture
def pair(kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[WorkerProcess, WorkerProcess]]:
    """Two workers of one prefix on one partition, with the policy above; neither started."""
    prefix = "z" + uuid.uuid4().hex[:10]
    reviewers = tmp_path / "reviewers.yaml"
    reviewers.write_text("groups: {payments-reviewers: [alice]}\n")
    workers = tuple(WorkerProcess(kafka_bootstrap, prefix, tmp_path / name, partitions=1, reviewers=reviewers)
                    for name in ("a", "b"))
    asyncio.run(publish_policy(kafka_bootstrap, workers[0].names.policies, POLICY, "zombie"))
    try:
        yield workers[0], workers[1]
    finally:
        for worker in workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGCONT)
            worker.stop()


async def _members(bootstrap: str, group: str) -> tuple[str, int]:
    """The group's state and its number of members, as the group coordinator reports them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_consumer_groups([group])
        _, _, state, _, _, members, *_ = described.groups[0]
        return str(state), len(members)
    finally:
        await admin.close()


async def _wait_group(bootstrap: str, group: str, members: int, timeout_s: float = 120.0) -> None:
    """Wait until the group is stable with ``members`` members."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (await _members(bootstrap, group)) != ("Stable", members):
        assert asyncio.get_running_loop().time() < deadline, f"group never stable with {members} members"
        await asyncio.sleep(0.5)


async def _owner_first(*workers: WorkerProcess) -> tuple[WorkerProcess, WorkerProcess]:
    """The two workers, the one owning the partition first (once one is ready with it)."""
    while True:
        for index, worker in enumerate(workers):
            status, body = await asyncio.to_thread(worker.get, "/ready")
            if status == 200 and json.loads(body).get("partitions"):
                return worker, workers[1 - index]
        await asyncio.sleep(0.2)


async def test_a_worker_woken_after_its_partitions_moved_sends_nothing_that_contradicts_the_new_owner(
    pair: tuple[WorkerProcess, WorkerProcess],
) -> None:
    first, second = pair
    group = worker_app_id(first.prefix)
    first.start()
    await first.wait_ready()  # the worker creates the topics
    async with Client(first.bootstrap, first.prefix) as client:
        second.start()
        await _wait_group(first.bootstrap, group, 2)
        zombie, survivor = await _owner_first(first, second)
        agent = f"agent-{uuid.uuid4().hex[:6]}"
        large = make_intent(agent, params={"amount": 500})
        pending = await client.decide(large)
        assert pending.decision is DecisionKind.REQUIRE_APPROVAL and not pending.final
        await client.wait_for(lambda: large.request_id in client.requests, what="approval request")
        request = client.requests[large.request_id]
        small = [make_intent(agent, params={"amount": 10}) for _ in range(3 * LIMIT)]
        before = await client.decide_all(small[:3])  # counted by the zombie-to-be
        assert [d.decision for d in before] == [ALLOW] * 3

        assert zombie.proc is not None
        zombie.proc.send_signal(signal.SIGSTOP)
        await survivor.wait_ready()  # past the session timeout: the survivor restored the partition
        verdict = ApprovalVerdict(request_id=request.request_id, intent_digest=request.intent_digest,
                                  reviewer="alice", verdict=VerdictKind.APPROVE, reason="ok",
                                  decided_at=datetime.now(UTC))
        await client._producer.send_and_wait(client.names.approvals, verdict.model_dump_json().encode(),
                                             key=str(request.request_id).encode())
        final = await client.decision(large, final=True)
        assert final.decision is ALLOW
        during = await client.decide_all(small[3:8])  # the limit (5 with the approved one) is reached
        assert Counter(d.decision for d in during) == {ALLOW: LIMIT - 4, BLOCK: 4 + 5 - LIMIT}
        # The zombie's clock will have the approval expired (past its grace) when it wakes.
        while datetime.now(UTC) <= request.deadline_at + timedelta(milliseconds=EXPIRY_GRACE_MS + 2_000):
            await asyncio.sleep(0.5)

        zombie.proc.send_signal(signal.SIGCONT)
        await _wait_group(zombie.bootstrap, group, 2)  # the zombie woke and rejoined
        after = await client.decide_all(small[8:])
        assert {d.decision for d in after} == {BLOCK}

        finals = {rid: {d.decision for d in found if d.final} for rid, found in client.decisions.items()}
        conflicting = {rid: kinds for rid, kinds in finals.items() if len(kinds) > 1}
        assert not conflicting, f"conflicting finals: {conflicting}"
        allowed = [rid for rid, kinds in finals.items() if kinds == {ALLOW}]
        assert len(allowed) == LIMIT
