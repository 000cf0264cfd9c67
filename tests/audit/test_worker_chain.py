"""A real worker's audit chains survive a SIGKILL mid-stream: after the restart its chains go on where
the changelog left them, and ``audit verify`` passes on everything it wrote (stored as the sink would)."""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from consumers.audit_store import ClientStore
from consumers.audit_verify import Verifier
from schemas import AuditEventType, AuditRecord
from sluicegate.trust import KeyRing, RequestSigner, SignerCredential
from streams.policy_source import publish_policy
from tests.consumers.conftest import Store
from tests.streams.harness import POLICIES, Client, WorkerProcess, make_intent

pytestmark = pytest.mark.integration
RING = KeyRing.generate()
SIGNER = RequestSigner.generate()
AGENTS = 24
ROUNDS = 10


def _heads(audit: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
    """Per chain: the highest sequence number sent, and the highest a checkpoint covers."""
    heads: dict[str, int] = defaultdict(int)
    signed: dict[str, int] = defaultdict(int)
    for record in audit:
        if record.get("chain"):
            link = record["chain"]
            heads[link["chain_id"]] = max(heads[link["chain_id"]], link["seq"])
        elif record.get("checkpoint"):
            point = record["checkpoint"]
            signed[point["chain_id"]] = max(signed[point["chain_id"]], point["seq"])
    return heads, signed


def _complete(audit: list[dict[str, Any]], decided: set[str]) -> bool:
    """The ``decided`` requests' decisions are audited, every approval asked for is requested, and a
    checkpoint covers every chain's newest record."""
    if not decided <= {r["request_id"] for r in audit if r["event_type"] == "decision"}:
        return False
    asked = {r["request_id"] for r in audit if r["event_type"] == "decision"
             and r["decision"]["decision"] == "REQUIRE_APPROVAL"}
    requested = {r["request_id"] for r in audit if r["event_type"] == "approval_requested"}
    heads, signed = _heads(audit)
    return asked <= requested and all(signed[chain] >= seq for chain, seq in heads.items())


async def test_sigkill_mid_stream_then_verify_passes(
    kafka_bootstrap: str, tmp_path: Path, audit_store: ClientStore, audit_db: str, store_records: Store,
) -> None:
    keys = {"SLUICEGATE_TRUST_KEYS": str(RING), "SLUICEGATE_TRUST_SIGNING_KEY": str(SIGNER)}
    reviewers = tmp_path / "reviewers.yaml"
    reviewers.write_text("groups: {payments-reviewers: [lena]}\n")
    worker = WorkerProcess(kafka_bootstrap, "ch" + secrets.token_hex(5), tmp_path / "w", reviewers=reviewers,
                           trust=keys)
    publisher = SignerCredential.issue(RING, "publisher", "policy-team")
    await publish_policy(kafka_bootstrap, worker.names.policies, (POLICIES / "fleet_budget.yaml").read_text(),
                         "fleet_budget.yaml", publisher)
    worker.start()
    try:
        await worker.wait_ready()
        async with Client(kafka_bootstrap, worker.prefix, RING) as client:
            intents = [make_intent(f"agent-{n % AGENTS}", params={"amount": 5 + n % 400})
                       for n in range(AGENTS * ROUNDS)]
            half = len(intents) // 2
            for intent in intents[:half]:
                await client.send(intent)
            await client.wait_for(lambda: len(client.decisions) >= half // 3, what="some decisions")
            await client.wait_for(lambda: bool(_heads(client.audit)[0]), what="some chained audit records")
            worker.kill()  # mid-stream: decided, chained, not all flushed or committed
            before, _ = _heads(client.audit)
            worker.start()
            await worker.wait_ready()
            await client.decide_all(intents[half:])
            await client.wait_for(lambda: all(i.request_id in client.decisions for i in intents),
                                  what="every decision")
            ids = {str(i.request_id) for i in intents}
            await client.wait_for(lambda: _complete(client.audit, ids), timeout_s=120, what="the audit")
            await asyncio.sleep(0)
            audit = list(client.audit)
    finally:
        worker.stop()

    records = [AuditRecord.model_validate(item) for item in audit]
    store_records(records)
    found = Verifier(audit_store, audit_db, SIGNER.public).run()
    assert found.ok, [str(p) for p in found.problems]
    published = {r.event_id for r in records if r.event_type is AuditEventType.POLICY_PUBLISHED}
    assert found.pending == 0 and found.unchained == len(published)  # policy events are not chained
    heads, _ = _heads(audit)
    assert found.chains == len(heads) and found.records == sum(heads.values())
    assert any(heads[chain] > seq for chain, seq in before.items()), "a chain went on after the restart"
    decided = {r.request_id for r in records if r.event_type is AuditEventType.DECISION}
    assert decided >= {i.request_id for i in intents}, "every decision is in the audit"
