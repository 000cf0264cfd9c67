"""What a model reads when sluicegate refuses a tool call: the decision's determining reasons."""

from __future__ import annotations

from schemas import Decision
from sluicegate.errors import ActionBlocked


def determining_reasons(decision: Decision) -> tuple[str, ...]:
    """The reasons of what determined ``decision`` (each reason starts with its rule id or marker);
    all its reasons when none is named."""
    named = set(decision.determining)
    chosen = tuple(r for r in decision.reasons if r.split(":", 1)[0].strip() in named)
    return chosen or decision.reasons


def refusal_text(error: ActionBlocked) -> str:
    """One line for the model: what was refused, how, why, and the request id to quote."""
    decision = error.decision
    reasons = "; ".join(determining_reasons(decision)) or "no reason given"
    return (f"sluicegate refused {error.tool} ({type(error).__name__}, {decision.decision.value}, request "
            f"{decision.request_id}): {reasons}")
