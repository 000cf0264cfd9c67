"""``sluicegate approvals list|approve|deny``: the CLI reviewer's commands (their Kafka side is
:mod:`sluicegate.cli.review`)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from schemas import TopicNames, VerdictKind
from sluicegate.cli.review import PendingRequest, ReviewError, pending_requests, submit_verdict
from sluicegate.settings import Settings

app = typer.Typer(name="approvals", help="List pending approval requests and approve or deny them.")

ReviewerOption = Annotated[str, typer.Option("--reviewer", help="Your identity in the approver groups.")]
SHORT_ID = 8
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]
RequestArgument = Annotated[str, typer.Argument(help="The request id, or a unique prefix of it.")]


def _fail(exc: ReviewError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


def _where() -> tuple[str, TopicNames]:
    settings = Settings()
    return settings.bootstrap_servers, TopicNames(settings.topic_prefix)


def _row(item: PendingRequest) -> dict[str, object]:
    request, intent = item.request, item.request.intent
    return {
        "request_id": str(request.request_id), "agent_id": intent.agent_id, "tool": intent.tool,
        "action": intent.action.value, "target": intent.target, "params": intent.params,
        "approver_group": request.approver_group, "quorum": request.quorum, "risk": request.risk.score,
        "reasons": list(request.reasons), "deadline_at": request.deadline_at.isoformat(),
        "overdue": item.overdue,
    }


@app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """Requests waiting for a verdict (overdue ones are about to be expired by the processor)."""
    bootstrap, topics = _where()
    try:
        pending = asyncio.run(pending_requests(bootstrap, topics, datetime.now(UTC)))
    except ReviewError as exc:
        raise _fail(exc) from None
    if as_json:
        for item in pending:
            typer.echo(json.dumps(_row(item), sort_keys=True))
        return
    if not pending:
        typer.echo("No pending approval requests.")
        return
    table = Table("request", "agent", "tool", "target", "group", "quorum", "risk", "deadline",
                  caption="request ids are shortened; any unique prefix works with approve/deny")
    for item in pending:
        row = _row(item)
        deadline = f"{row['deadline_at']}" + (" (overdue)" if item.overdue else "")
        table.add_row(
            str(row["request_id"])[:SHORT_ID], str(row["agent_id"]), f"{row['tool']} {row['action']}",
            str(row["target"]), str(row["approver_group"]), str(row["quorum"]), f"{row['risk']:.2f}",
            deadline,
        )
    Console().print(table)


def _send(request_id: str, reviewer: str, verdict: VerdictKind, reason: str | None) -> None:
    bootstrap, topics = _where()
    try:
        now = datetime.now(UTC)
        sent = asyncio.run(submit_verdict(
            bootstrap, topics, request_id, reviewer=reviewer, verdict=verdict, reason=reason, now=now
        ))
    except ReviewError as exc:
        raise _fail(exc) from None
    typer.echo(f"{sent.verdict.value} by {sent.reviewer} sent for {sent.request_id}; the processor checks it "
               "(group, owner, digest, deadline) and the agent gets the final decision.")


@app.command()
def approve(request_id: RequestArgument, reviewer: ReviewerOption) -> None:
    """Approve a pending request."""
    _send(request_id, reviewer, VerdictKind.APPROVE, None)


@app.command()
def deny(
    request_id: RequestArgument,
    reviewer: ReviewerOption,
    reason: Annotated[str, typer.Option("--reason", help="Why the action is denied (shown to the agent).")],
) -> None:
    """Deny a pending request, with a reason."""
    _send(request_id, reviewer, VerdictKind.DENY, reason)
