"""The decision the engine makes on an intent, with everything needed to explain it."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from schemas.common import SCHEMA_VERSION, DecisionKind, UtcDatetime, WireModel

APPROVAL_GRANTED = "approval_granted"
"""The reason of the final ALLOW of an approved request."""
APPROVAL_DENIED = "approval_denied"
"""The reason of the final BLOCK of a denied request."""
APPROVAL_EXPIRED = "approval_expired"
"""The reason of the final BLOCK of a request nobody decided before its deadline."""


class RiskFactor(WireModel):
    """One named contribution to the risk score."""

    name: str = Field(description="e.g. action_type, target_sensitivity, amount_deviation.")
    contribution: float = Field(ge=0.0, le=1.0)
    detail: str = ""


class Risk(WireModel):
    """The risk score in [0, 1] and the factors it is made of."""

    score: float = Field(default=0.0, ge=0.0, le=1.0)
    factors: tuple[RiskFactor, ...] = ()


class Decision(WireModel):
    """ALLOW, BLOCK or REQUIRE_APPROVAL for one intent, with its reasons."""

    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: UUID
    agent_id: str = ""
    decision: DecisionKind
    reasons: tuple[str, ...] = ()
    rules: tuple[str, ...] = Field(default=(), description="Ids of the rules and limits that applied.")
    risk: Risk = Field(default_factory=Risk)
    policy_version: str = Field(default="", description="Content hash of the policy used.")
    policy_name: str = Field(default="", description="Name of the policy used (its `policy:` field).")
    decided_at: UtcDatetime
    final: bool = Field(
        default=True,
        description="False for a pending REQUIRE_APPROVAL; the final decision follows on the same route.",
    )
    approval_deadline_at: UtcDatetime | None = None
    approved_by: tuple[str, ...] = ()
