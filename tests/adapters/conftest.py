"""The adapters' tests share one worker (trust on) for the package; each test is its own agent."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import pytest

from schemas import ApprovalRequest, VerdictKind
from sluicegate import Gate, Settings
from sluicegate.cli.review import Reviewer, ReviewTrust, pending_requests, submit_verdict
from sluicegate.trust import AgentCredential, SignerCredential
from streams.policy_source import publish_policy
from tests.approvals.factories import WorkerKeys
from tests.streams.harness import WorkerProcess

KEYS = WorkerKeys()
REVIEWER = "rita"
POLICY = """
policy: adapters
default: BLOCK
rules:
  - {id: small-refunds, match: {tool: payments.refund}, when: {field: params.amount, op: lte, value: 100},
     decision: ALLOW}
  - id: refund-review
    match: {tool: payments.refund}
    when: {field: params.amount, op: gt, value: 100}
    decision: REQUIRE_APPROVAL
    approval: {group: payments, timeout: 10m}
  - id: refund-blocked
    match: {tool: payments.refund}
    when: {field: params.amount, op: gt, value: 1000}
    decision: BLOCK
    description: "refunds over 1000 are not allowed"
"""


@dataclass
class Deployment:
    worker: WorkerProcess

    def settings(self) -> Settings:
        return Settings(kafka_bootstrap_servers=self.worker.bootstrap, topic_prefix=self.worker.prefix,
                        decision_timeout_s=60)

    def credential(self) -> AgentCredential:
        return AgentCredential.issue(KEYS.ring, f"agent-{secrets.token_hex(4)}", "support", "production")

    async def pending(self, agent_id: str, count: int) -> list[ApprovalRequest]:
        """The agent's first ``count`` pending approval requests, once the workers have published them."""
        trust = ReviewTrust(KEYS.public)
        while True:
            found = await pending_requests(self.worker.bootstrap, self.worker.names, datetime.now(UTC),
                                           trust=trust)
            mine = [p.request for p in found.requests if p.request.intent.agent_id == agent_id]
            if len(mine) >= count:
                return mine
            await asyncio.sleep(0.2)

    async def verdict(self, request_id: UUID, verdict: VerdictKind, reason: str | None = None) -> None:
        """A reviewer's signed verdict, sent as ``sluicegate approvals approve|deny`` sends it."""
        reviewer = Reviewer(REVIEWER, SignerCredential.issue(KEYS.ring, "reviewer", REVIEWER))
        await submit_verdict(self.worker.bootstrap, self.worker.names, str(request_id), reviewer=reviewer,
                             verdict=verdict, reason=reason, now=datetime.now(UTC),
                             trust=ReviewTrust(KEYS.public))


@pytest.fixture(scope="package")
def deployment(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("adapters")
    reviewers = workdir / "reviewers.yaml"
    reviewers.write_text(f"groups:\n  payments: [{REVIEWER}]\n")
    trust = {"SLUICEGATE_TRUST_KEYS": str(KEYS.ring), "SLUICEGATE_TRUST_SIGNING_KEY": str(KEYS.signer)}
    worker = WorkerProcess(kafka_bootstrap, "ad" + secrets.token_hex(5), workdir, reviewers=reviewers,
                           trust=trust)
    publisher = SignerCredential.issue(KEYS.ring, "publisher", "policy-team")
    asyncio.run(publish_policy(kafka_bootstrap, worker.names.policies, POLICY, "adapters.yaml", publisher))
    with worker.running():
        yield Deployment(worker)


@pytest.fixture
async def gate(deployment: Deployment) -> AsyncIterator[Gate]:
    """A gate with its own agent's credential."""
    async with Gate(deployment.settings(), credential=deployment.credential()) as result:
        yield result
