"""Sensitive parameters: decided on as usual, stored in the audit only as a salted hash (with a masked
hint where the policy says so), end to end through a real worker, its audit chain and ClickHouse."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from consumers.audit_store import ClientStore
from consumers.audit_verify import Verifier
from schemas import AuditRecord, DecisionKind
from schemas.policy import Sensitive
from sluicegate.cli.review import digest_mismatch
from sluicegate.trust import KeyRing
from streams.engine import CompiledPolicy, compile_policy
from streams.policy_source import publish_policy
from streams.redaction import PREFIX, Redactor
from tests.audit.test_worker_chain import _complete
from tests.consumers.conftest import Store
from tests.consumers.records import approval_requested, decision_record
from tests.streams.harness import Client, WorkerProcess, make_intent

CARD, EMAIL = "4111111111111111", "kim@example.com"
APPROVAL = DecisionKind.REQUIRE_APPROVAL
POLICY = """
policy: payments_with_cards
default: BLOCK
sensitive:
  - {field: params.card_number, show_last: 4}
  - {field: params.customer.email}
rules:
  - id: visa-only
    match: {tool: payments.charge}
    when: {field: params.card_number, op: regex, value: "^4[0-9]{15}$"}
    decision: ALLOW
  - id: big-charges-need-approval
    match: {tool: payments.charge}
    when: {field: params.amount, op: gt, value: 100}
    decision: REQUIRE_APPROVAL
    approval: {group: payments-reviewers}
"""


class _Policies:
    """What the redactor reads of a PolicySource (unit tests)."""

    def __init__(self, current: CompiledPolicy | None) -> None:
        self.current, self.shadow = current, None

    def version(self, version: str) -> CompiledPolicy | None:
        return self.current if self.current and self.current.version == version else None


def _policy() -> CompiledPolicy:
    return compile_policy(POLICY, "test.yaml")


def _charge(card: str = CARD, amount: int = 12) -> Any:
    return make_intent("agent-1", tool="payments.charge", action="execute", target="payments:charges",
                       params={"card_number": card, "amount": amount,
                               "customer": {"email": EMAIL, "tier": "gold"}})


def test_redacts_declared_params_only_as_a_keyed_hash_with_the_hint() -> None:
    ring = KeyRing.generate("k1")
    redactor = Redactor(_Policies(_policy()), ring)  # type: ignore[arg-type]
    asked = _charge()
    record = redactor(decision_record(asked, DecisionKind.ALLOW))
    assert record.intent is not None
    params: dict[str, Any] = json.loads(json.dumps(record.intent.params))
    assert params["card_number"].startswith(f"{PREFIX}k1:") and params["card_number"].endswith(":****1111")
    assert params["customer"]["email"].startswith(f"{PREFIX}k1:") and EMAIL not in json.dumps(params)
    assert (params["amount"], params["customer"]["tier"]) == (12, "gold")
    assert redactor(decision_record(asked, DecisionKind.ALLOW)).intent == record.intent  # stable: joinable
    other = Redactor(_Policies(_policy()), KeyRing.generate("k1"))  # type: ignore[arg-type]
    assert other.token(CARD) != redactor.token(CARD)  # keyed: no ring, no guessing
    assert redactor(record).intent == record.intent  # never redacted twice
    requested = redactor(approval_requested(asked))
    assert requested.approval_request is not None
    assert CARD not in requested.approval_request.intent.model_dump_json()
    assert asked.params["card_number"] == CARD  # the decided intent itself is untouched


def test_nothing_declared_nothing_changed() -> None:
    redactor = Redactor(_Policies(None), None)  # type: ignore[arg-type]
    record = decision_record(_charge(), DecisionKind.ALLOW)
    assert redactor(record) is record
    assert Sensitive(field="params.a.b", show_last=2).show_last == 2


@pytest.mark.integration
async def test_a_worker_decides_on_the_value_and_audits_its_hash(
    kafka_bootstrap: str, tmp_path: Path, audit_store: ClientStore, audit_db: str, store_records: Store,
) -> None:
    worker = WorkerProcess(kafka_bootstrap, "rd" + secrets.token_hex(5), tmp_path / "w")
    await publish_policy(kafka_bootstrap, worker.names.policies, POLICY, "cards.yaml")
    worker.start()
    try:
        await worker.wait_ready()
        async with Client(kafka_bootstrap, worker.prefix) as client:
            visa, other, big = _charge(), _charge("5500000000000004"), _charge(amount=500)
            decided = await client.decide_all([visa, other, big])
            assert [d.decision for d in decided] == [DecisionKind.ALLOW, DecisionKind.BLOCK, APPROVAL]
            await client.wait_for(lambda: big.request_id in client.requests, what="the approval request")
            shown = client.requests[big.request_id]
            assert CARD not in shown.model_dump_json() and EMAIL not in shown.model_dump_json()
            assert str(shown.intent.params["card_number"]).endswith(":****1111")
            assert shown.intent_digest == big.digest()  # what a verdict approves: the action as sent
            assert digest_mismatch(shown) is None  # reviewers' tools still show it

            ids = {str(i.request_id) for i in (visa, other, big)}
            await client.wait_for(lambda: _complete(client.audit, ids), timeout_s=120, what="the audit")
            await asyncio.sleep(0)
            audit = list(client.audit)
    finally:
        worker.stop()
    text = json.dumps(audit)
    assert CARD not in text and "5500000000000004" not in text and EMAIL not in text
    store_records([AuditRecord.model_validate(item) for item in audit])
    rows = audit_store.query(f"SELECT params FROM {audit_db}.audit_events WHERE event_type = 'decision' "
                             "ORDER BY event_time").rows
    stored = [json.loads(row[0]) for row in rows]
    # decided in the same millisecond or not, in any order: compare the hints as a multiset
    assert sorted(p["card_number"][-9:] for p in stored) == [":****0004", ":****1111", ":****1111"]
    assert all(p["card_number"].startswith(PREFIX + "public:") for p in stored)  # trust off: a public key
    assert Verifier(audit_store, audit_db, None).run().ok
