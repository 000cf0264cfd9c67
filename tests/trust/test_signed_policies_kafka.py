"""Signed policies on the real broker: `sluicegate policy publish` signs and numbers, a policy source with
the deployment's ring (as a worker with trust on runs it) takes only what verifies and audits both."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from typer.testing import CliRunner, Result

from infra.kafka.admin import TopicSpec, ensure_topics
from schemas import TopicNames
from sluicegate.cli import _register, app
from sluicegate.trust import KeyRing, SignerCredential
from streams.metrics import Metrics
from streams.policy_source import PolicySource, publish_policy, publish_raw, read_latest

pytestmark = pytest.mark.integration
_register()
STRICT = ("policy: strict\ndefault: BLOCK\n"
          "rules:\n  - {id: refunds, match: {tool: payments.refund}, decision: ALLOW}\n")
LOOSE = "policy: loose\ndefault: ALLOW\n"
WAIT_S = 30.0


class Deployment:
    """A topic prefix, a key ring, a running policy source with that ring, and what it audited."""

    def __init__(self, bootstrap: str, prefix: str, tmp: Path) -> None:
        self.bootstrap, self.names, self.tmp = bootstrap, TopicNames(prefix), tmp
        self.ring = KeyRing.generate("k1")
        self.publisher = SignerCredential.issue(self.ring, "publisher", "ci")
        self.source = PolicySource(bootstrap, self.names.policies, Metrics(), ring=self.ring,
                                   audit_topic=self.names.audit)
        self.audit: list[dict[str, Any]] = []

    def loads(self, result: str) -> float:
        registry = self.source.metrics.registry
        found = registry.get_sample_value("sluicegate_policy_loads_total", {"result": result})
        return found or 0.0

    async def publish_cli(self, text: str, *args: str, credential: str | None = "own") -> Result:
        path = self.tmp / "policy.yaml"
        path.write_text(text)
        env = {"SLUICEGATE_TRUST_OFF": None,
               "SLUICEGATE_PUBLISHER_CREDENTIAL": str(self.publisher) if credential == "own" else credential}
        argv = ["policy", "publish", str(path), "--bootstrap", self.bootstrap,
                "--topic-prefix", self.names.prefix, *args]

        def invoke() -> Result:
            return CliRunner().invoke(app, argv, env=env)

        return await asyncio.to_thread(invoke)

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        for _ in range(int(WAIT_S / 0.05)):
            if predicate():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    async def read_audit(self) -> None:
        consumer = AIOKafkaConsumer(self.names.audit, bootstrap_servers=self.bootstrap,
                                    auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    self.audit += [json.loads(record.value) for record in records if record.value]
        finally:
            await consumer.stop()


@pytest.fixture
async def deployment(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> AsyncIterator[Deployment]:
    found = Deployment(kafka_bootstrap, unique_name, tmp_path)
    await ensure_topics(kafka_bootstrap, [
        TopicSpec(found.names.policies, 1, configs={"cleanup.policy": "compact"}),
        TopicSpec(found.names.audit, 1),
    ])
    tasks = [asyncio.create_task(found.source.run()), asyncio.create_task(found.read_audit())]
    try:
        await asyncio.wait_for(found.source.caught_up.wait(), WAIT_S)
        yield found
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_publish_without_a_credential_sends_nothing(deployment: Deployment) -> None:
    result = await deployment.publish_cli(STRICT, credential=None)
    assert result.exit_code == 1 and "no publisher credential" in result.stderr
    assert "nothing published" in result.stderr
    result = await deployment.publish_cli(STRICT, credential="sgs1.reviewer.k1.bGVuYQ.AAAA")
    assert result.exit_code == 1 and "not a publisher one" in result.stderr
    assert await read_latest(deployment.bootstrap, deployment.names.policies) is None


async def test_signed_policies_unsigned_ones_replays_and_rollbacks(deployment: Deployment) -> None:
    source = deployment.source
    first = await deployment.publish_cli(STRICT)
    assert first.exit_code == 0, first.output
    assert "serial 1" in first.stdout and "signed by publisher ci" in first.stdout
    await deployment.until(lambda: source.current is not None and source.current.name == "strict", "strict")
    signed = await read_latest(deployment.bootstrap, deployment.names.policies)
    assert signed is not None

    # Anyone with produce rights: an unsigned loose policy is ignored, the strict one stays.
    await publish_raw(deployment.bootstrap, deployment.names.policies, LOOSE)
    await deployment.until(lambda: deployment.loads("unsigned") == 1, "the unsigned policy refused")
    assert source.current is not None and source.current.name == "strict"

    second = await deployment.publish_cli(LOOSE)
    assert second.exit_code == 0 and "serial 2" in second.stdout, second.output
    await deployment.until(lambda: source.current is not None and source.current.name == "loose", "loose")

    # A copy of the first (signed) record published again is stale.
    await publish_raw(deployment.bootstrap, deployment.names.policies, signed[0], signed[1])
    await deployment.until(lambda: deployment.loads("stale") == 1, "the replay refused")
    assert source.current is not None and source.current.name == "loose"

    refused = await deployment.publish_cli(STRICT, "--serial", "1")
    assert refused.exit_code == 1 and "--allow-rollback" in refused.stderr
    rollback = await deployment.publish_cli(STRICT, "--serial", "1", "--allow-rollback")
    assert rollback.exit_code == 0 and "a rollback from serial 2" in rollback.stdout, rollback.output
    await deployment.until(lambda: source.current is not None and source.current.name == "strict", "rollback")

    # The audit: three policies published (publisher, version, previous), two records refused.
    def kinds() -> list[str]:
        return [event["event_type"] for event in deployment.audit]

    await deployment.until(lambda: kinds().count("policy_published") == 3 and kinds().count("security") == 2,
                           "the audit events")
    published = [json.loads(e["note"]) for e in deployment.audit if e["event_type"] == "policy_published"]
    assert [(p["publisher"], p["serial"], p["seq"]) for p in published] == [("ci", 1, 1), ("ci", 2, 2),
                                                                            ("ci", 1, 3)]
    assert published[1]["previous"] == published[0]["version"] and published[2]["rollback"] is True
    notes = [e["note"] for e in deployment.audit if e["event_type"] == "security"]
    assert "(unsigned)" in notes[0] and "(stale)" in notes[1]


async def test_every_worker_writes_the_same_policy_events(deployment: Deployment) -> None:
    """A second source (another worker, or a restarted one) reading the topic later writes events
    identical to the first's, so the audit store keeps one of each."""
    await publish_policy(deployment.bootstrap, deployment.names.policies, STRICT, "strict.yaml",
                         deployment.publisher)
    await publish_raw(deployment.bootstrap, deployment.names.policies, LOOSE)
    await deployment.until(lambda: len(deployment.audit) == 2, "the first source's events")
    late = PolicySource(deployment.bootstrap, deployment.names.policies, Metrics(), ring=deployment.ring,
                        audit_topic=deployment.names.audit)
    task = asyncio.create_task(late.run())
    try:
        await asyncio.wait_for(late.caught_up.wait(), WAIT_S)
        assert late.current is not None and late.current.name == "strict"
        await deployment.until(lambda: len(deployment.audit) == 4, "the second source's events")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    first, second = deployment.audit[:2], deployment.audit[2:]
    assert first == second
    assert [event["event_type"] for event in first] == ["policy_published", "security"]
