"""``sluicegate kafka start --secure --protocol SASL_SSL``: the SDK, a worker subprocess, the approvals CLI,
the Slack bot (on a fake Slack) and the audit sink, each with its role's settings lines (SCRAM user and the
broker's CA), decide, approve and audit over TLS; a client that does not trust the broker's CA is refused;
the benchmarks' clients take the same settings."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError
from clickhouse_connect.driver.client import Client

from bench.audit import sink_throughput
from bench.broker import require_open_broker
from consumers.audit_sink import DEFAULT_GROUP_ID, SinkConfig, open_sink
from consumers.slack_blocks import ACTION_APPROVE
from consumers.slack_bot import SlackApprovalBot
from infra.clickhouse.migrate import migrate
from infra.kafka.secure import ADMIN
from infra.kafka.tls import ensure_certificates
from schemas import ApprovalRequest, TopicNames, VerdictKind
from sluicegate import Gate, Settings
from sluicegate.cli.review import Reviewer, ReviewTrust, pending_requests, submit_verdict
from sluicegate.trust import AgentCredential, SignerCredential
from streams.policy_source import publish_policy
from tests.approvals.conftest import bot_config, trusting
from tests.approvals.factories import WorkerKeys
from tests.approvals.slack_fake import FakeSlackApi
from tests.approvals.test_slack_bot import click
from tests.security.tls_kafka import TlsKafka, produce, tls_broker
from tests.streams.harness import WorkerProcess

pytestmark = pytest.mark.integration
KEYS = WorkerKeys()
POLICY = """
policy: tls_e2e
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
REVIEWERS = "groups:\n  payments-reviewers: [alice, bob]\nbots:\n  slack-bot: [alice]\n"
DEADLINE_S = 120.0


@pytest.fixture(scope="module")
def sasl_ssl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsKafka]:
    with tls_broker(tmp_path_factory.mktemp("sasl-ssl-kafka"), "SASL_SSL") as kafka:
        yield kafka


async def approve_with_the_cli(kafka: TlsKafka, names: TopicNames, agent_id: str) -> None:
    """``sluicegate approvals list`` until the agent's request shows, then ``approve`` it, as bob with the
    reviewer role's settings."""
    options, trust = kafka.settings("reviewer").kafka_client_options(), ReviewTrust(KEYS.public)
    deadline = time.monotonic() + DEADLINE_S
    request: ApprovalRequest | None = None
    while request is None:
        assert time.monotonic() < deadline, "no approval request listed"
        listed = await pending_requests(kafka.bootstrap, names, datetime.now(UTC), trust=trust,
                                        options=options)
        request = next((p.request for p in listed.requests if p.request.intent.agent_id == agent_id), None)
    await submit_verdict(kafka.bootstrap, names, str(request.request_id),
                         reviewer=Reviewer("bob", KEYS.reviewer("bob")), verdict=VerdictKind.APPROVE,
                         reason=None, now=datetime.now(UTC), trust=trust, options=options)


def decision_rows(client: Client, database: str, agent_id: str) -> list[tuple[str, str]]:
    """The audited decisions of ``agent_id``: (decision, determining rule ids)."""
    rows = client.query(f"SELECT decision, toString(rules) FROM {database}.audit_events FINAL "
                        f"WHERE agent_id = '{agent_id}' AND event_type = 'decision'")
    return [(str(decision), str(rules)) for decision, rules in rows.result_rows]


async def test_sdk_worker_approvals_and_audit_sink_run_over_sasl_ssl(
    sasl_ssl: TlsKafka, unique_name: str, tmp_path: Path, clickhouse_client: Client, fake_slack: FakeSlackApi,
    users_file: Path,
) -> None:
    kafka = sasl_ssl
    assert kafka.env("agent")["SLUICEGATE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    topics = await kafka.deployment(unique_name)
    names = topics.names
    publisher = SignerCredential.issue(KEYS.ring, "publisher", "policy-team")
    await publish_policy(kafka.bootstrap, names.policies, POLICY, "tls_e2e.yaml", publisher,
                         options=kafka.settings("publisher").kafka_client_options())
    reviewers = tmp_path / "reviewers.yaml"
    reviewers.write_text(REVIEWERS)
    worker = WorkerProcess(kafka.bootstrap, names.prefix, tmp_path / "worker", partitions=topics.partitions,
                           reviewers=reviewers, trust={"SLUICEGATE_TRUST_KEYS": str(KEYS.ring),
                                  "SLUICEGATE_TRUST_SIGNING_KEY": str(KEYS.signer), **kafka.env("worker")})
    worker.start()
    bot = SlackApprovalBot(bot_config(fake_slack.url, users_file, tmp_path / "posted.jsonl",
                                      bootstrap_servers=kafka.bootstrap, topics=names,
                                      kafka_options=kafka.settings("reviewer").kafka_client_options(),
                                      **trusting(KEYS)))
    try:
        await worker.wait_ready()
        await bot.start()
        agent_id = f"tls-{uuid.uuid4().hex[:8]}"
        credential = AgentCredential.issue(KEYS.ring, agent_id, "support", "production", "team-a")
        async with Gate(kafka.settings("agent", topic_prefix=names.prefix, decision_timeout_s=30),
                        credential=credential) as gate:

            @gate.guard(tool="payments.refund", action="create", target="payments:refunds",
                        params=lambda amount: {"amount": amount})
            async def refund(amount: float) -> str:
                return f"refunded {amount}"

            # trust is on: the tool runs only on a decision the SDK verified with the agent's key
            assert await refund(40) == "refunded 40"
            reviewed = asyncio.create_task(refund(400))
            await approve_with_the_cli(kafka, names, agent_id)
            assert await asyncio.wait_for(reviewed, DEADLINE_S) == "refunded 400"
            in_slack = asyncio.create_task(refund(500))
            posted = await fake_slack.wait_for("chat.postMessage", lambda p: "500" in str(p.get("blocks")),
                                               timeout=DEADLINE_S)
            assert (await click(bot, ACTION_APPROVE, posted, "UALICE"))[0] == 200
            assert await asyncio.wait_for(in_slack, DEADLINE_S) == "refunded 500"

        database = f"tls_{names.prefix}"
        migrate(clickhouse_client, database)
        sink = await open_sink(kafka.bootstrap, clickhouse_client, SinkConfig(
            database=database, topics=names, group_id=DEFAULT_GROUP_ID, decoders=0,
            kafka_options=kafka.settings("sink").kafka_client_options()))
        task = asyncio.create_task(sink.run())
        try:
            deadline = time.monotonic() + DEADLINE_S
            expected = {("ALLOW", "['small-refund']"), ("REQUIRE_APPROVAL", "['refund-review']")}
            while not (expected <= set(rows := decision_rows(clickhouse_client, database, agent_id))
                       and len(rows) == 5):  # and the two approved ALLOWs
                assert time.monotonic() < deadline, "the decision's audit row did not reach ClickHouse"
                await asyncio.sleep(0.5)  # polling ClickHouse, written by the sink's task
        finally:
            sink.stop()
            await task
            await sink.close()
    finally:
        await bot.stop()
        worker.stop()  # once the audit is stored: the worker writes its audit records after the decision
    assert sorted(decision for decision, _ in rows) == ["ALLOW"] * 3 + ["REQUIRE_APPROVAL"] * 2, rows


async def test_a_client_that_does_not_trust_the_brokers_ca_is_refused(
    sasl_ssl: TlsKafka, unique_name: str, tmp_path: Path,
) -> None:
    kafka = sasl_ssl
    intents = (await kafka.deployment(unique_name, partitions=1)).names.intents
    await produce(kafka.bootstrap, kafka.settings("agent").kafka_client_options(), intents)
    other_ca = ensure_certificates(tmp_path / "other", ()).ca_file
    for cafile in (None, other_ca):  # the system's CAs; another throwaway CA
        untrusting = kafka.settings("agent", kafka_ssl_cafile=cafile)
        with pytest.raises(KafkaConnectionError):
            await produce(kafka.bootstrap, untrusting.kafka_client_options(), intents)


async def test_a_benchmark_runs_over_sasl_ssl_from_the_settings(
    sasl_ssl: TlsKafka, monkeypatch: pytest.MonkeyPatch, clickhouse_client: Client,
) -> None:
    """bench/audit.py's sink measurement (topic creation, producer, sink) with a super user's settings in
    the environment: nothing connects unless every client takes them."""
    env = {**sasl_ssl.env("agent"), "SLUICEGATE_KAFKA_SASL_USERNAME": ADMIN,
           "SLUICEGATE_KAFKA_SASL_PASSWORD": sasl_ssl.credentials.password(ADMIN)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert await asyncio.wait_for(sink_throughput(sasl_ssl.bootstrap, clickhouse_client, 200), DEADLINE_S) > 0
    with pytest.raises(SystemExit, match="pass --bootstrap"):  # a broker it starts itself is open
        require_open_broker(Settings())
