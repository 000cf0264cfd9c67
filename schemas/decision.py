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

DEFAULT = "default"
"""In ``determining``: the policy's ``default`` (no rule applied, and the default is the decision)."""
INVALID_INTENT = "invalid_intent"
"""In ``determining`` (and the reason's prefix): the input was not a valid intent."""
NO_POLICY = "no_policy"
"""In ``determining`` (and the reason's prefix): the worker had no valid policy."""
EVENT_TIME_SKEW = "event_time_skew"
"""In ``determining`` (and the reason's prefix): ``occurred_at`` was too far from the intent's arrival."""
ENGINE_ERROR = "engine_error"
"""In ``determining`` (and the reason's prefix): the engine failed (not a rule: a rule that cannot be
evaluated names itself)."""
POLICY_UNAVAILABLE = "policy_unavailable"
"""In ``determining`` (and the reason's prefix): a shared-limit hop no longer knew the intent's policy."""
GOVERNANCE_UNAVAILABLE = "governance_unavailable"
"""In ``determining`` (and the reason's prefix): the SDK got no decision in time and failed closed."""
UNAUTHENTICATED = "unauthenticated"
"""In ``determining`` (and the reason's prefix): the intent's credential is missing or does not match."""
WRONG_PARTITION = "wrong_partition"
"""In ``determining`` (and the reason's prefix): the intent is not keyed by its agent id, or not on the
partition Kafka's default partitioner gives that key, so its limits could not hold."""
REQUEST_ID_REUSED = "request_id_reused"
"""In ``determining`` (and the reason's prefix): a request id already decided for another action."""
WAIT_EXPIRED = "wait_expired"
"""In ``determining`` (and the reason's prefix): the intent reached a worker after its agent stopped
waiting (``wait_until``); it is refused so that nothing contradicts what the agent was told."""
MARKERS = frozenset({
    DEFAULT, INVALID_INTENT, NO_POLICY, EVENT_TIME_SKEW, ENGINE_ERROR, POLICY_UNAVAILABLE,
    GOVERNANCE_UNAVAILABLE, APPROVAL_GRANTED, APPROVAL_DENIED, APPROVAL_EXPIRED, UNAUTHENTICATED,
    WRONG_PARTITION, REQUEST_ID_REUSED, WAIT_EXPIRED,
})
"""The ids ``determining`` uses for what is not a rule, limit or risk threshold (no policy may use them)."""

DETERMINING_DESCRIPTION = (
    "What determined the decision (Cedar's determining policies): the ids, in policy order, of the "
    "rules, limits and risk thresholds (`risk>=<at_least>`) that applied and whose decision is the "
    "final one; `rules` names everything that applied. `default` (first) when no rule applied and the "
    "policy's default is the decision. A rule or limit that could not be evaluated BLOCKs and names "
    "itself. Otherwise one marker: `invalid_intent`, `no_policy`, `event_time_skew`, `engine_error`, "
    "`policy_unavailable` (a shared-limit hop no longer knew the policy) or `governance_unavailable` "
    "(the SDK failed closed). The final decision of an approval: `approval_granted`, `approval_denied` "
    "or `approval_expired`, then what determined the pending REQUIRE_APPROVAL. Empty in decisions "
    "stored before the field existed."
)


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
    rules: tuple[str, ...] = Field(
        default=(), description="Ids of everything that applied: rules, limits and risk thresholds.",
    )
    determining: tuple[str, ...] = Field(default=(), description=DETERMINING_DESCRIPTION)
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
    intent_digest: str = Field(
        default="",
        description="Digest of the action decided (tool, action, target, params), on the decisions of "
                    "an approval (pending and final): the action reviewers saw. When present, the SDK "
                    "accepts the decision only for the action it asked about.",
    )
