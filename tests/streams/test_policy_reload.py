"""Policies on a running worker: none at all, the first one, an invalid one, a switch during traffic;
and, on a worker with trust on, unsigned and foreign-signed ones.

The tests up to the trusted worker's run in file order on one worker started without a policy.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from schemas import DecisionKind
from sluicegate.trust import KeyRing, RequestSigner, SignerCredential
from streams.policy_source import publish_policy, publish_raw
from tests.streams.harness import POLICIES, Client, WorkerProcess, make_intent

pytestmark = pytest.mark.integration
ALLOW, BLOCK = DecisionKind.ALLOW, DecisionKind.BLOCK
T0 = datetime(2031, 6, 2, 10, tzinfo=UTC)


def payment(agent_id: str, at: datetime) -> dict[str, object]:
    return {"tool": "payments.create", "target": "bank:payments", "params": {"amount": 10},
            "agent_role": "finance", "occurred_at": at}


async def publish(worker: WorkerProcess, name: str) -> str:
    text = (POLICIES / name).read_text()
    policy = await publish_policy(worker.bootstrap, worker.names.policies, text, name)
    await worker.wait_ready(policy_version=policy.version)
    return policy.version


async def test_no_policy_blocks_everything(bare: Client, bare_worker: WorkerProcess) -> None:
    status, _ = await asyncio.to_thread(bare_worker.get, "/ready")
    assert status == 503
    decision = await bare.decide(make_intent("nobody", params={"amount": 1}))
    assert decision.decision is BLOCK and decision.reasons[0].startswith("no_policy")
    assert decision.policy_version == ""


async def test_fifty_first_transaction_in_an_hour_is_blocked(
    bare: Client, bare_worker: WorkerProcess,
) -> None:
    version = await publish(bare_worker, "financial.yaml")
    agent = f"fin-{uuid.uuid4().hex[:8]}"
    decisions = await bare.decide_all(
        make_intent(agent, **payment(agent, T0 + timedelta(seconds=60 * i))) for i in range(51)
    )  # 51 payments within 50 minutes
    assert [d.decision for d in decisions[:50]] == [ALLOW] * 50
    assert decisions[50].decision is BLOCK and decisions[50].rules[-1] == "transactions-per-agent-per-hour"
    assert {d.policy_version for d in decisions} == {version}
    # An hour after the first, the first one has left the window.
    nxt = await bare.decide(make_intent(agent, **payment(agent, T0 + timedelta(hours=1))))
    assert nxt.decision is ALLOW


async def test_invalid_policy_is_ignored(bare: Client, bare_worker: WorkerProcess) -> None:
    before = await bare_worker.wait_ready()
    await publish_raw(bare_worker.bootstrap, bare_worker.names.policies, "policy: broken\nrules: [{id: 1}]\n")

    def invalid_count() -> float:
        _, body = bare_worker.get("/metrics")
        found = re.search(rb'sluicegate_policy_loads_total\{result="invalid"\} ([0-9.]+)', body)
        return float(found.group(1)) if found else 0.0

    for _ in range(300):  # the worker reports each policy it reads; wait for it to read this one
        if await asyncio.to_thread(invalid_count) >= 1:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the worker never reported the invalid policy")
    agent = f"fin-{uuid.uuid4().hex[:8]}"
    decision = await bare.decide(make_intent(agent, **payment(agent, T0 + timedelta(days=2))))
    assert decision.decision is ALLOW and decision.policy_version == before["policy_version"]


async def test_policy_published_during_traffic_takes_effect(bare: Client, bare_worker: WorkerProcess) -> None:
    old = (await bare_worker.wait_ready())["policy_version"]
    agent = f"fin-{uuid.uuid4().hex[:8]}"
    sent = []

    async def traffic() -> None:
        for i in range(100_000):
            intent = make_intent(agent, **payment(agent, T0 + timedelta(days=4, seconds=i)))
            sent.append(intent)
            await bare.send(intent)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(traffic())
    try:
        await bare.wait_for(lambda: any(i.request_id in bare.decisions for i in sent),
                            what="traffic flowing")
        new = (await publish_policy(bare_worker.bootstrap, bare_worker.names.policies,
                                    (POLICIES / "customer_support.yaml").read_text())).version
        await bare.wait_for(lambda: any(d[0].policy_version == new for d in bare.decisions.values()),
                            what="a decision under the new policy")
    finally:
        task.cancel()
    decided = [bare.decisions[i.request_id][0] for i in sent if i.request_id in bare.decisions]
    versions = [d.policy_version for d in decided]
    switch = versions.index(new)
    assert switch > 0 and set(versions[:switch]) == {old} and set(versions[switch:]) == {new}
    # Under the old policy a payment is allowed; the support policy has no rule for it: default BLOCK.
    assert all(d.decision is ALLOW for d in decided[:switch])
    assert all(d.decision is BLOCK for d in decided[switch:])


# -- a worker with trust on: only signed policies -------------------------------------------------------

RING = KeyRing.generate("k1")
PUBLISHER = SignerCredential.issue(RING, "publisher", "policy-team")


@pytest.fixture(scope="module")
def trusted_worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    keys = {"SLUICEGATE_TRUST_KEYS": str(RING), "SLUICEGATE_TRUST_SIGNING_KEY": str(RequestSigner.generate())}
    worker = WorkerProcess(kafka_bootstrap, "tp" + secrets.token_hex(5), tmp_path_factory.mktemp("tp"),
                           trust=keys)
    with worker.running(ready=False):
        yield worker


def policy_loads(worker: WorkerProcess, result: str) -> float:
    _, body = worker.get("/metrics")
    found = re.search(rb'sluicegate_policy_loads_total\{result="' + result.encode() + rb'"\} ([0-9.]+)', body)
    return float(found.group(1)) if found else 0.0


async def until_loads(worker: WorkerProcess, result: str, count: float) -> None:
    for _ in range(300):
        if await asyncio.to_thread(policy_loads, worker, result) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the worker never reported {count:g} {result} policies\n{worker.log_tail()}")


async def test_a_trusted_worker_takes_only_signed_policies(trusted_worker: WorkerProcess) -> None:
    names = trusted_worker.names
    unsigned = (POLICIES / "customer_support.yaml").read_text()
    await publish_raw(trusted_worker.bootstrap, names.policies, unsigned)
    await until_loads(trusted_worker, "unsigned", 1)
    assert (await trusted_worker.wait_ready(ready=False))["policy_version"] is None  # still no policy

    signed = await publish_policy(trusted_worker.bootstrap, names.policies,
                                  (POLICIES / "financial.yaml").read_text(), "financial.yaml", PUBLISHER)
    await trusted_worker.wait_ready(policy_version=signed.version)

    # A loosening policy signed with a key the workers do not hold, then the unsigned one again.
    stranger = SignerCredential.issue(KeyRing.generate("k1"), "publisher", "policy-team")
    await publish_policy(trusted_worker.bootstrap, names.policies, "policy: open\ndefault: ALLOW\n",
                         "open.yaml", stranger)
    await until_loads(trusted_worker, "unverified", 1)
    await publish_raw(trusted_worker.bootstrap, names.policies, unsigned)
    await until_loads(trusted_worker, "unsigned", 2)
    assert (await trusted_worker.wait_ready())["policy_version"] == signed.version

    async with Client(trusted_worker.bootstrap, trusted_worker.prefix) as client:
        await client.wait_for(
            lambda: sum(r["event_type"] == "security" for r in client.audit) >= 3
            and any(r["event_type"] == "policy_published" for r in client.audit), what="the policy audit")
        published = [json.loads(r["note"]) for r in client.audit if r["event_type"] == "policy_published"]
        assert [(p["publisher"], p["version"]) for p in published] == [("policy-team", signed.version)]
