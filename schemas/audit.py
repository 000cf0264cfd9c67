"""The audit record: one event in the life of a request, as stored for analysts."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import Field

from schemas.approval import ApprovalRequest, ApprovalVerdict
from schemas.common import SCHEMA_VERSION, UtcDatetime, WireModel
from schemas.decision import Decision
from schemas.intent import Intent
from schemas.outcome import ExecutionOutcome


class AuditEventType(StrEnum):
    """Kinds of audited events."""

    DECISION = "decision"
    APPROVAL_REQUESTED = "approval_requested"
    VERDICT_ACCEPTED = "verdict_accepted"
    VERDICT_REJECTED = "verdict_rejected"
    OUTCOME = "outcome"
    FAIL_OPEN = "fail_open"
    SECURITY = "security"
    """A message that did not verify, or an intent on the wrong partition: refused, with why."""
    POLICY_PUBLISHED = "policy_published"
    SHADOW_DECISION = "shadow_decision"
    """What the shadow policy would have decided (never enforced); ``decision`` is the shadow's."""
    CHECKPOINT = "checkpoint"
    """A worker's signed statement of how far one audit chain reached (:class:`ChainCheckpoint`)."""


HASH_PATTERN = r"^[0-9a-f]{64}$"


class ChainLink(WireModel):
    """Where a record stands in its audit chain (one chain per partition of the stage that wrote it):
    its sequence number and the hash of the chain's previous record (``docs/audit.md``)."""

    chain_id: str = Field(min_length=1, max_length=200)
    seq: int = Field(ge=1, lt=2**63)
    prev: str = Field(pattern=HASH_PATTERN, description="Hash of record seq-1; 64 zeros for seq 1.")


class ChainCheckpoint(WireModel):
    """A worker's signature over the head of a chain: record ``seq`` has hash ``hash``."""

    chain_id: str = Field(min_length=1, max_length=200)
    seq: int = Field(ge=1, lt=2**63)
    hash: str = Field(pattern=HASH_PATTERN)
    signature: str = Field(default="", max_length=200,
                           description="The workers' Ed25519 signature (empty with trust off).")


class AuditRecord(WireModel):
    """One audited event. ``event_id`` is deterministic so storage can deduplicate retries."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(min_length=1, max_length=200)
    event_type: AuditEventType
    event_time: UtcDatetime
    request_id: UUID
    intent: Intent | None = None
    decision: Decision | None = None
    approval_request: ApprovalRequest | None = None
    verdict: ApprovalVerdict | None = None
    outcome: ExecutionOutcome | None = None
    note: str | None = Field(default=None, max_length=2000, description="e.g. why a verdict was rejected.")
    checkpoint: ChainCheckpoint | None = None
    chain: ChainLink | None = Field(default=None, description="Set by the worker that wrote it.")
