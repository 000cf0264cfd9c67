"""Approval requests sent to reviewers and the verdicts they send back."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import Field

from schemas.common import SCHEMA_VERSION, UtcDatetime, WireModel
from schemas.decision import Risk
from schemas.intent import Intent


class ApprovalRequest(WireModel):
    """A pending REQUIRE_APPROVAL decision, published for reviewers."""

    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: UUID
    intent: Intent
    intent_digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    reasons: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    determining: tuple[str, ...] = Field(
        default=(), description="What determined the REQUIRE_APPROVAL (see Decision.determining).",
    )
    risk: Risk = Field(default_factory=Risk)
    policy_version: str = ""
    approver_group: str
    quorum: int = Field(default=1, ge=1)
    channel: str | None = None
    created_at: UtcDatetime
    deadline_at: UtcDatetime


class VerdictKind(StrEnum):
    """What a reviewer said."""

    APPROVE = "APPROVE"
    DENY = "DENY"


class ApprovalVerdict(WireModel):
    """A reviewer's answer, bound to the exact action by its digest."""

    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: UUID
    intent_digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    reviewer: str = Field(min_length=1, max_length=256)
    verdict: VerdictKind
    reason: str | None = Field(default=None, max_length=2000)
    source: Literal["slack", "cli", "api"] = "cli"
    decided_at: UtcDatetime
