"""Builders shared by the engine tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import Intent
from streams.engine import CompiledPolicy, compile_policy

T0 = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)  # a Monday, 10:00 UTC


def intent(
    tool: str = "payments.refund", action: str = "create", target: str = "payments:refunds",
    at: datetime | timedelta = T0, **fields: Any,
) -> Intent:
    """A valid intent; ``at`` may be an offset from :data:`T0`."""
    occurred = T0 + at if isinstance(at, timedelta) else at
    data: dict[str, Any] = {
        "request_id": str(uuid.uuid4()), "agent_id": "agent-1", "agent_role": "support",
        "environment": "production", "tool": tool, "action": action, "target": target,
        "params": {}, "occurred_at": occurred.isoformat(),
    }
    data.update(fields)
    return Intent.model_validate(data)


def policy(body: str, header: str = "policy: test\n") -> CompiledPolicy:
    """Compile a policy from YAML text (a ``policy:`` header is added)."""
    return compile_policy(header + body, "test.yaml")
