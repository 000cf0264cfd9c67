"""The intent: a tool call an agent is about to make, published before the tool runs."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import BeforeValidator, Field, JsonValue, ValidationError, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, from_json, to_json

from schemas.common import MAX_JSON_DEPTH, SCHEMA_VERSION, Action, UtcDatetime, WireModel, check_json_value

MAX_PARAMS_BYTES = 64 * 1024
"""Largest accepted ``params`` object, measured as compact JSON."""
MAX_INTENT_BYTES = 128 * 1024
"""The most an intent's JSON may weigh: a worker BLOCKs a larger one unread (``invalid_intent``), so the
records derived from it (an approval parks it twice) stay under Kafka's default 1 MiB message limit."""

Identifier = Annotated[str, Field(min_length=1, max_length=256)]


class TraceContext(WireModel):
    """W3C trace context carried through to the decision and the audit."""

    traceparent: str = Field(pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
    tracestate: str | None = Field(default=None, max_length=512)


Params = Annotated[dict[str, JsonValue], BeforeValidator(check_json_value)]
"""Checked for depth and finite numbers before pydantic walks it (its own walk would hit its recursion
guard first, with a path as long as the nesting)."""
_TOO_DEEP = PydanticCustomError(
    "json_too_deep", "params nests deeper than the JSON parser's 200 levels; the limit is {limit}",
    {"limit": MAX_JSON_DEPTH})


class Intent(WireModel):
    """One tool call an agent wants to make; the unit the engine decides on."""

    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: UUID
    agent_id: Identifier
    agent_role: Identifier
    agent_owner: Identifier | None = Field(
        default=None, description="The person or team that owns the agent; may not approve it."
    )
    environment: Identifier
    tool: Identifier = Field(description="Tool name, e.g. payments.refund.")
    action: Action
    target: str = Field(
        min_length=3, max_length=512, pattern=r"^[^:\s]+:\S+$",
        description="kind:name, e.g. database:users.",
    )
    params: Params = Field(default_factory=dict)
    occurred_at: UtcDatetime = Field(description="Event time of the call; all windows use it.")
    labels: dict[str, str] = Field(default_factory=dict)
    trace: TraceContext | None = None
    session_id: Identifier | None = Field(
        default=None, description="The agent's session (a conversation, a task): sequence rules key by it.",
    )
    wait_until: UtcDatetime | None = Field(
        default=None, description="When the agent stops waiting for the first decision (the SDK sets "
        "it): a worker that reaches the intent later BLOCKs it (wait_expired) and counts nothing.",
    )
    reply_key: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
        exclude_if=lambda value: value is None,
        description="Where the decision goes (docs/replies.md): the worker publishes it on the replies "
        "topic keyed by this, instead of on the decisions topic keyed by agent id. Covered by the "
        "intent's authenticator; omitted: the decisions topic.",
    )

    @field_validator("params")
    @classmethod
    def _params_not_too_large(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(to_json(value))
        if size > MAX_PARAMS_BYTES:
            raise ValueError(f"params is {size} bytes; the limit is {MAX_PARAMS_BYTES}")
        return value

    @classmethod
    def model_validate_json(
        cls, json_data: str | bytes | bytearray, *, strict: bool | None = None, extra: Any = None,
        context: Any | None = None, by_alias: bool | None = None, by_name: bool | None = None,
    ) -> Self:
        """Parse an intent's JSON; a document nested past the JSON parser's own bound (200 levels) is
        refused as too deep, like one nested past :data:`MAX_JSON_DEPTH`, not as invalid JSON."""
        try:
            return super().model_validate_json(json_data, strict=strict, extra=extra, context=context,
                                               by_alias=by_alias, by_name=by_name)
        except ValidationError as exc:
            if not any(e["type"] == "json_invalid" and "recursion limit" in e["msg"] for e in exc.errors()):
                raise
        details = InitErrorDetails(type=_TOO_DEEP, loc=("params",), input="...")
        raise ValidationError.from_exception_data(cls.__name__, [details])

    @property
    def occurred_at_ms(self) -> int:
        """Event time in milliseconds since the epoch."""
        return int(self.occurred_at.timestamp() * 1000)

    def digest(self) -> str:
        """SHA-256 over the exact action (tool, action, target, params): binds approvals to it."""
        return intent_digest(self.tool, self.action, self.target, self.params)


def raw_fields(raw: bytes | str) -> dict[str, Any] | None:
    """The top-level fields of a raw intent that failed validation (to name its request and agent), also
    when it nests past the JSON parser's bound; None when it is not a JSON object."""
    try:
        obj = from_json(raw)
    except ValueError:
        try:  # nested past pydantic's parser: the standard one goes as deep as the interpreter's stack
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            return None
    return obj if isinstance(obj, dict) else None


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value`` (keys sorted, no spaces, characters kept): equal values give
    equal text, so what is hashed from it does not depend on who serialised the value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def intent_digest(tool: str, action: Action, target: str, params: dict[str, Any]) -> str:
    """Canonical digest of an action; equal only for the same tool, action, target and params."""
    canonical = canonical_json({"tool": tool, "action": action.value, "target": target, "params": params})
    return hashlib.sha256(canonical.encode()).hexdigest()
