"""The demo's flow over SASL on the secure broker, each component with its own role's user and nothing
more than the ACL matrix allows: the SDK (agent), a worker subprocess (worker), policy publish
(publisher), the approvals CLI and the Slack bot against a fake Slack (reviewer), the audit sink (sink).

Agents write no audit: their outcomes and a forged report reach the audit through the worker, which
audits the forgery as a security event.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver.client import Client

from consumers.audit_sink import DEFAULT_GROUP_ID, SinkConfig, open_sink
from consumers.slack_blocks import ACTION_APPROVE
from consumers.slack_bot import SlackApprovalBot
from infra.clickhouse.migrate import migrate
from schemas import ApprovalRequest, ExecutionOutcome, OutcomeStatus, VerdictKind
from sluicegate import Gate
from sluicegate.cli.review import Reviewer, ReviewTrust, pending_requests, submit_verdict
from sluicegate.reports import report_headers
from sluicegate.trust import AgentCredential, KeyRing, SignerCredential
from streams.policy_source import publish_policy
from streams.topology import WorkerTopics
from tests.approvals.conftest import bot_config, trusting
from tests.approvals.factories import WorkerKeys
from tests.approvals.slack_fake import FakeSlackApi
from tests.approvals.test_slack_bot import click
from tests.security.conftest import SecureKafka
from tests.streams.harness import WorkerProcess

pytestmark = pytest.mark.integration
KEYS = WorkerKeys()
REVIEWERS = """
groups:
  payments-reviewers: [alice, bob]
bots:
  slack-bot: [alice]
"""
POLICY = """
policy: sasl_e2e
default: BLOCK
rules:
  - {id: small-refund, match: {tool: payments.refund}, when: {field: params.amount, op: lte, value: 100},
     decision: ALLOW}
  - id: refund-review
    match: {tool: payments.refund}
    when: {field: params.amount, op: gt, value: 100}
    decision: REQUIRE_APPROVAL
    approval: {group: payments-reviewers, timeout: 10m, channel: "#payments"}
"""
DEADLINE_S = 120.0


async def eventually(what: str, probe: Callable[[], Any]) -> Any:
    """``probe()``'s first truthy answer (awaited when it is a coroutine), polling state owned by another
    process (the broker, ClickHouse) until :data:`DEADLINE_S`."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        answer = probe()
        if asyncio.iscoroutine(answer):
            answer = await answer
        if answer:
            return answer
        await asyncio.sleep(0.5)
    raise AssertionError(f"not within {DEADLINE_S:.0f} s: {what}")


async def start_worker(kafka: SecureKafka, topics: WorkerTopics, workdir: Path) -> WorkerProcess:
    reviewers = workdir / "reviewers.yaml"
    reviewers.parent.mkdir(parents=True, exist_ok=True)
    reviewers.write_text(REVIEWERS)
    env = {"SLUICEGATE_TRUST_KEYS": str(KEYS.ring), "SLUICEGATE_TRUST_SIGNING_KEY": str(KEYS.signer),
           **kafka.env("worker")}
    worker = WorkerProcess(kafka.bootstrap, topics.names.prefix, workdir, partitions=topics.partitions,
                           reviewers=reviewers, trust=env)
    worker.start()
    await worker.wait_ready()
    return worker


async def pending_request(kafka: SecureKafka, topics: WorkerTopics, agent_id: str) -> ApprovalRequest:
    """The approval request the worker opened for ``agent_id``, as the CLI's list shows it."""
    async def listed() -> ApprovalRequest | None:
        pending = await pending_requests(kafka.bootstrap, topics.names, datetime.now(UTC),
                                         trust=ReviewTrust(KEYS.public), options=kafka.options("reviewer"))
        return next((p.request for p in pending.requests if p.request.intent.agent_id == agent_id), None)

    found: ApprovalRequest = await eventually(f"an approval request for {agent_id}", listed)
    return found


async def forge_report(kafka: SecureKafka, topics: WorkerTopics, agent_id: str) -> ExecutionOutcome:
    """An outcome for ``agent_id`` signed with a credential of another deployment, by the agent user."""
    outcome = ExecutionOutcome(request_id=uuid.uuid4(), agent_id=agent_id, tool="payments.refund",
                               status=OutcomeStatus.SUCCESS, duration_ms=1.0, finished_at=datetime.now(UTC))
    foreign = AgentCredential.issue(KeyRing.generate(), agent_id, "support", "production", "team-a")
    value = outcome.model_dump_json().encode()
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, **kafka.options("agent"))
    await producer.start()
    try:
        await producer.send_and_wait(topics.names.outcomes, value, key=agent_id.encode(),
                                     headers=report_headers(foreign, value))
    finally:
        await producer.stop()
    return outcome


async def test_the_demo_flow_over_sasl_with_one_user_per_role(
    secure_kafka: SecureKafka, secured: WorkerTopics, tmp_path: Path, fake_slack: FakeSlackApi,
    users_file: Path, clickhouse_client: Client,
) -> None:
    kafka, names = secure_kafka, secured.names
    publisher = SignerCredential.issue(KEYS.ring, "publisher", "policy-team")
    await publish_policy(kafka.bootstrap, names.policies, POLICY, "sasl_e2e.yaml", publisher,
                         options=kafka.options("publisher"))
    worker = await start_worker(kafka, secured, tmp_path / "worker")
    bot = SlackApprovalBot(bot_config(fake_slack.url, users_file, tmp_path / "posted.jsonl",
                                      bootstrap_servers=kafka.bootstrap, topics=names,
                                      kafka_options=kafka.options("reviewer"), **trusting(KEYS)))
    await bot.start()
    agent_id = f"sdk-{uuid.uuid4().hex[:8]}"
    credential = AgentCredential.issue(KEYS.ring, agent_id, "support", "production", "team-a")
    try:
        async with Gate(kafka.settings("agent", topic_prefix=names.prefix, decision_timeout_s=30),
                        credential=credential) as gate:
            ran: list[float] = []

            @gate.guard(tool="payments.refund", action="create", target="payments:refunds",
                        params=lambda amount: {"amount": amount})
            async def refund(amount: float) -> str:
                ran.append(amount)
                return f"refunded {amount}"

            assert await refund(40) == "refunded 40"  # ALLOW
            by_cli = asyncio.create_task(refund(400))  # REQUIRE_APPROVAL, approved with the CLI
            request = await pending_request(kafka, secured, agent_id)
            await submit_verdict(kafka.bootstrap, names, str(request.request_id),
                                 reviewer=Reviewer("bob", KEYS.reviewer("bob")), verdict=VerdictKind.APPROVE,
                                 reason=None, now=datetime.now(UTC), trust=ReviewTrust(KEYS.public),
                                 options=kafka.options("reviewer"))
            assert await asyncio.wait_for(by_cli, DEADLINE_S) == "refunded 400"
            by_bot = asyncio.create_task(refund(500))  # approved with a click in Slack
            posted = await fake_slack.wait_for("chat.postMessage", lambda p: "500" in str(p.get("blocks")),
                                               timeout=DEADLINE_S)
            assert (await click(bot, ACTION_APPROVE, posted, "UALICE"))[0] == 200
            assert await asyncio.wait_for(by_bot, DEADLINE_S) == "refunded 500"
            assert ran == [40, 400, 500]
        forged = await forge_report(kafka, secured, agent_id)

        database = f"sasl_{names.prefix}"
        migrate(clickhouse_client, database)
        sink = await open_sink(kafka.bootstrap, clickhouse_client, SinkConfig(
            database=database, topics=names, group_id=DEFAULT_GROUP_ID, decoders=0,
            kafka_options=kafka.options("sink")))
        task = asyncio.create_task(sink.run())
        try:
            def events() -> dict[str, int]:
                rows = clickhouse_client.query(
                    f"SELECT event_type, count() FROM {database}.audit_events FINAL WHERE "
                    f"agent_id = '{agent_id}' OR request_id = '{forged.request_id}' GROUP BY event_type")
                return {str(kind): int(n) for kind, n in rows.result_rows}

            stored = await eventually("the outcomes and the forged report's security event in ClickHouse",
                                      lambda: (lambda e: e if e.get("outcome") == 3 and e.get("security")
                                               else None)(events()))
        finally:
            sink.stop()
            await task
            await sink.close()
        assert stored["decision"] >= 3 and stored["approval_requested"] == 2
        note = clickhouse_client.query(
            f"SELECT note FROM {database}.audit_events FINAL WHERE request_id = '{forged.request_id}'")
        assert "refused an agent report" in str(note.result_rows[0][0])
    finally:
        await bot.stop()
        worker.stop()
