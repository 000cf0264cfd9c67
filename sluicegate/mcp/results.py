"""What the model reads when a call does not go through: the decision's determining reasons."""

from __future__ import annotations

import mcp_types as types

from schemas import Decision
from sluicegate.guard import Authorization, blocked_error


def determining_reasons(decision: Decision) -> tuple[str, ...]:
    """The reasons of what determined ``decision`` (each reason starts with its rule id or marker);
    all its reasons when none is named."""
    named = set(decision.determining)
    chosen = tuple(r for r in decision.reasons if r.split(":", 1)[0].strip() in named)
    return chosen or decision.reasons


def blocked_text(auth: Authorization) -> str:
    """One paragraph for the model: what was refused, by what, and the request to quote."""
    decision = auth.decision
    kind = type(blocked_error(auth)).__name__
    reasons = "; ".join(determining_reasons(decision)) or "no reason given"
    return (f"sluicegate refused {auth.intent.tool} ({kind}, {decision.decision.value}, request "
            f"{decision.request_id}): {reasons}")


def error_result(text: str) -> types.CallToolResult:
    """A tool error the model can read (``isError``: the call did not reach the server)."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)
