"""``sluicegate kafka start --secure`` with the ACL matrix applied: the broker refuses what a role may not
do (an authorization error), and lets each role do its part."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from typer.testing import CliRunner

from infra.kafka.secure import ROLES
from sluicegate.cli.kafka import app
from streams.topology import WorkerTopics
from tests.security.conftest import SecureKafka

pytestmark = pytest.mark.integration


async def produce(kafka: SecureKafka, user: str, topic: str, password: str | None = None) -> None:
    """One record to ``topic`` as ``user``; raises what the broker answers."""
    options = kafka.options(user)
    if password is not None:
        options["sasl_plain_password"] = password
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, request_timeout_ms=10_000, **options)
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"{}", key=b"k"), 30)
    finally:
        await producer.stop()


def forbidden_to_agents(topics: WorkerTopics) -> list[str]:
    n = topics.names
    return [n.decisions, n.approval_requests, n.approvals, n.approval_results, n.audit, n.policies,
            topics.shared_limits, topics.agent_feedback, topics.approval_control,
            topics.agent_state_changelog]


async def test_an_agent_cannot_produce_to_decisions_approvals_internal_or_audit_topics(
    secure_kafka: SecureKafka, secured: WorkerTopics,
) -> None:
    for topic in forbidden_to_agents(secured):
        with pytest.raises(TopicAuthorizationFailedError):
            await produce(secure_kafka, "agent", topic)


async def test_each_role_writes_its_own_topics(secure_kafka: SecureKafka, secured: WorkerTopics) -> None:
    n = secured.names
    for user, topic in [("agent", n.intents), ("agent", n.outcomes), ("worker", n.decisions),
                        ("worker", n.audit), ("worker", secured.shared_limits),
                        ("worker", secured.agent_state_changelog), ("reviewer", n.approvals),
                        ("publisher", n.policies)]:
        await produce(secure_kafka, user, topic)
    for user in ("reviewer", "sink", "publisher"):
        with pytest.raises(TopicAuthorizationFailedError):
            await produce(secure_kafka, user, n.decisions)


async def test_a_wrong_password_is_refused(secure_kafka: SecureKafka, secured: WorkerTopics) -> None:
    with pytest.raises(KafkaConnectionError):
        await produce(secure_kafka, "worker", secured.names.decisions, password="guessed")


def test_start_secure_prints_each_roles_settings_and_acls_apply(secure_kafka: SecureKafka) -> None:
    """The CLI on the running secure broker: its start is a no-op that prints the roles' settings lines."""
    port = secure_kafka.bootstrap.rpartition(":")[2]
    data_dir = str(secure_kafka.data_dir)
    runner = CliRunner()
    started = runner.invoke(app, ["start", "--secure", "--port", port, "--data-dir", data_dir])
    assert started.exit_code == 0, started.output
    for role in ROLES:
        assert f"SLUICEGATE_KAFKA_SASL_USERNAME={role}" in started.output
        assert f"SLUICEGATE_KAFKA_SASL_PASSWORD={secure_kafka.credentials.password(role)}" in started.output
    applied = runner.invoke(app, ["acls", "--prefix", "cli-acls", "--data-dir", data_dir, "--apply"])
    assert applied.exit_code == 0, applied.output
    assert "User:worker     WRITE    topic cli-acls.decisions (literal)" in applied.output
    assert "applied" in applied.output
