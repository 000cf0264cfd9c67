"""What the model reads when a call does not go through (see :mod:`sluicegate.adapters.refusal`)."""

from __future__ import annotations

import mcp_types as types

from sluicegate.adapters.refusal import refusal_text
from sluicegate.guard import Authorization, blocked_error


def blocked_text(auth: Authorization) -> str:
    """The refusal of a call that was not allowed: what, how, the determining reasons, the request."""
    return refusal_text(blocked_error(auth))


def error_result(text: str) -> types.CallToolResult:
    """A tool error the model can read (``isError``: the call did not reach the server)."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)
