"""Builders for approval tests: intents, requests, verdicts, a reviewer directory and the workers' keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import Action, ApprovalRequest, ApprovalVerdict, Decision, DecisionKind, Intent, VerdictKind
from sluicegate.trust import AUTH_HEADER, KeyRing, RequestSigner, SignerCredential
from streams.stages.approval_machine import ReviewerDirectory, new_request

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)

DIRECTORY = ReviewerDirectory.from_mapping(
    {
        "groups": {
            "payments-reviewers": ["alice", "bob", "carol", "dave"],
            "team-payments": ["dave", "erin"],
            "reviewers": ["zoe"],
        }
    }
)


def make_intent(**overrides: Any) -> Intent:
    fields: dict[str, Any] = {
        "request_id": uuid.uuid4(),
        "agent_id": "refund-bot-1",
        "agent_role": "support",
        "agent_owner": "carol",
        "environment": "production",
        "tool": "payments.refund",
        "action": Action.CREATE,
        "target": "payments:refunds",
        "params": {"amount": 120.5},
        "occurred_at": T0,
    }
    fields.update(overrides)
    return Intent(**fields)


def make_request(
    intent: Intent | None = None,
    *,
    quorum: int = 1,
    group: str = "payments-reviewers",
    timeout: timedelta = timedelta(minutes=15),
    channel: str | None = "#approvals",
) -> ApprovalRequest:
    intent = intent or make_intent()
    decision = Decision(
        request_id=intent.request_id,
        agent_id=intent.agent_id,
        decision=DecisionKind.REQUIRE_APPROVAL,
        reasons=("refund-review: amount over 50",),
        rules=("refund-review",),
        decided_at=T0,
        policy_version="abc123",
        final=False,
    )
    return new_request(
        intent, decision, now=T0, approver_group=group, quorum=quorum, timeout=timeout, channel=channel
    )


def make_verdict(
    request: ApprovalRequest,
    reviewer: str = "alice",
    kind: VerdictKind = VerdictKind.APPROVE,
    **overrides: Any,
) -> ApprovalVerdict:
    fields: dict[str, Any] = {
        "request_id": request.request_id,
        "intent_digest": request.intent_digest,
        "reviewer": reviewer,
        "verdict": kind,
        "decided_at": T0 + timedelta(minutes=1),
        "source": "cli",
    }
    fields.update(overrides)
    return ApprovalVerdict(**fields)


Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class WorkerKeys:
    """A deployment's keys as the workers hold them: the master key ring and the request signer."""

    ring: KeyRing = field(default_factory=KeyRing.generate)
    signer: RequestSigner = field(default_factory=RequestSigner.generate)

    @property
    def public(self) -> str:
        """``SLUICEGATE_TRUST_PUBLIC_KEY``."""
        return self.signer.public

    def sign(self, value: bytes) -> Headers:
        """The headers a worker puts on an approval request or final of ``value``."""
        return [(AUTH_HEADER, self.signer.sign(value))]

    def reviewer(self, name: str) -> SignerCredential:
        return SignerCredential.issue(self.ring, "reviewer", name)

    def bot(self, name: str = "slack-bot") -> SignerCredential:
        return SignerCredential.issue(self.ring, "bot", name)


def tampered(request: ApprovalRequest, **params: Any) -> ApprovalRequest:
    """``request`` showing other params under the original digest (what a forger would publish)."""
    intent = request.intent.model_copy(update={"params": params})
    return request.model_copy(update={"intent": intent})
