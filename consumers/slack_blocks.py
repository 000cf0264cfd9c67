"""Block Kit for approval messages and the deny-reason modal; pure functions, no Slack calls."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, ValidationError

from schemas import ApprovalRequest, Decision, DecisionKind
from schemas.decision import APPROVAL_DENIED, APPROVAL_EXPIRED

ACTION_APPROVE = "sluicegate_approve"
ACTION_DENY = "sluicegate_deny"
DENY_CALLBACK = "sluicegate_deny_reason"
REASON_BLOCK = "reason"
REASON_INPUT = "reason_input"
ACTIONS_BLOCK = "sluicegate_actions"
MAX_PARAMS_CHARS = 2500
TOP_FACTORS = 3

Block = dict[str, Any]


class ActionRef(BaseModel):
    """What a button or modal carries: the request, its digest, and (for the modal) the message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: UUID
    intent_digest: str
    channel: str | None = None
    ts: str | None = None

    def encode(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def decode(cls, text: str) -> ActionRef | None:
        """The reference in a button value or modal metadata, or None if it is not one of ours."""
        try:
            return cls.model_validate_json(text)
        except ValidationError:
            return None


class MessageStatus(BaseModel):
    """What the message shows beyond the request: verdicts received so far and the final outcome."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    approved_by: tuple[str, ...] = ()
    denied_by: str | None = None
    deny_reason: str | None = None
    outcome: str | None = None

    @property
    def open(self) -> bool:
        """True while the buttons should be shown."""
        return self.outcome is None and self.denied_by is None

    def with_approval(self, reviewer: str) -> MessageStatus:
        if reviewer.casefold() in {r.casefold() for r in self.approved_by}:
            return self
        return self.model_copy(update={"approved_by": (*self.approved_by, reviewer)})

    def with_denial(self, reviewer: str, reason: str) -> MessageStatus:
        if self.denied_by is not None:
            return self
        return self.model_copy(update={"denied_by": reviewer, "deny_reason": reason})


def outcome_text(decision: Decision) -> str:
    """The final line for a decided approval, from the final decision."""
    first = decision.reasons[0] if decision.reasons else ""
    if decision.decision is DecisionKind.ALLOW:
        return f":white_check_mark: Approved by {', '.join(decision.approved_by) or 'policy'}"
    if first == APPROVAL_EXPIRED:
        return ":hourglass: Expired: no decision before the deadline, the action was blocked"
    if first == APPROVAL_DENIED and len(decision.reasons) > 1:
        return f":x: Denied ({decision.reasons[1]})"
    return f":no_entry: Blocked: {'; '.join(decision.reasons) or 'no reason given'}"


def _field(label: str, value: str) -> Block:
    return {"type": "mrkdwn", "text": f"*{label}*\n{value}"}


def _params_text(request: ApprovalRequest) -> str:
    text = json.dumps(request.intent.params, indent=2, sort_keys=True, ensure_ascii=False)
    if len(text) > MAX_PARAMS_CHARS:
        text = text[:MAX_PARAMS_CHARS] + "\n…"
    return f"*Params*\n```{text}```"


def _risk_text(request: ApprovalRequest) -> str:
    factors = sorted(request.risk.factors, key=lambda f: f.contribution, reverse=True)[:TOP_FACTORS]
    parts = [f"{f.name} +{f.contribution:.2f}" + (f" ({f.detail})" if f.detail else "") for f in factors]
    return f"*Risk* {request.risk.score:.2f}" + (f": {', '.join(parts)}" if parts else "")


def _deadline_text(request: ApprovalRequest) -> str:
    epoch = int(request.deadline_at.timestamp())
    iso = request.deadline_at.isoformat(timespec="seconds")
    return f"*Deadline* <!date^{epoch}^{{date_short_pretty}} {{time_secs}}|{iso}>"


def _status_lines(request: ApprovalRequest, status: MessageStatus) -> list[str]:
    lines: list[str] = []
    if status.approved_by:
        who = ", ".join(status.approved_by)
        lines.append(f"Approvals {len(status.approved_by)} of {request.quorum}: {who}")
    if status.denied_by is not None:
        lines.append(f"Denied by {status.denied_by}: {status.deny_reason}")
    if status.outcome is not None:
        lines.append(status.outcome)
    return lines


def _buttons(request: ApprovalRequest) -> Block:
    ref = ActionRef(request_id=request.request_id, intent_digest=request.intent_digest).encode()
    return {
        "type": "actions", "block_id": ACTIONS_BLOCK,
        "elements": [
            {"type": "button", "action_id": ACTION_APPROVE, "style": "primary", "value": ref,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": ACTION_DENY, "style": "danger", "value": ref,
             "text": {"type": "plain_text", "text": "Deny"}},
        ],
    }


def approval_message(request: ApprovalRequest, status: MessageStatus) -> tuple[str, list[Block]]:
    """The notification text and blocks for a request in its current status."""
    intent = request.intent
    text = f"Approval needed: {intent.agent_id} wants {intent.tool} {intent.action.value} on {intent.target}"
    blocks: list[Block] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"Approval needed: {intent.tool}"[:150]}},
        {"type": "section", "fields": [
            _field("Agent", intent.agent_id), _field("Role", intent.agent_role),
            _field("Environment", intent.environment), _field("Tool", intent.tool),
            _field("Action", intent.action.value), _field("Target", intent.target),
        ]},
        {"type": "section", "text": {"type": "mrkdwn", "text": _params_text(request)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _risk_text(request)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join([
            f"*Rules* {', '.join(request.rules) or '-'}",
            f"*Reasons* {'; '.join(request.reasons) or '-'}",
            f"*Approvers* {request.approver_group} (quorum {request.quorum})",
            _deadline_text(request),
        ])}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"request `{request.request_id}`"}]},
    ]
    lines = _status_lines(request, status)
    if lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}})
    if status.open:
        blocks.append(_buttons(request))
    return text, blocks


def deny_modal(ref: ActionRef) -> dict[str, Any]:
    """The modal that asks a reviewer why they deny; ``ref`` (with channel and ts) rides in its metadata."""
    return {
        "type": "modal", "callback_id": DENY_CALLBACK, "private_metadata": ref.encode(),
        "title": {"type": "plain_text", "text": "Deny the action"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{
            "type": "input", "block_id": REASON_BLOCK,
            "label": {"type": "plain_text", "text": "Why?"},
            "element": {"type": "plain_text_input", "action_id": REASON_INPUT, "multiline": True,
                        "min_length": 1, "max_length": 2000},
        }],
    }
