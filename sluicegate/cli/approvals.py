"""``sluicegate approvals list|approve|deny``: the CLI reviewer's commands (their Kafka side is
:mod:`sluicegate.cli.review`).

Every command needs ``SLUICEGATE_TRUST_PUBLIC_KEY`` (to verify what the workers publish) unless trust is
off; ``approve`` and ``deny`` sign with ``SLUICEGATE_REVIEWER_CREDENTIAL`` and send in its name.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from schemas import TopicNames, VerdictKind
from sluicegate.cli.review import (
    Ignored,
    PendingRequest,
    Reviewer,
    ReviewError,
    ReviewTrust,
    pending_requests,
    submit_verdict,
)
from sluicegate.settings import Settings
from sluicegate.trust import TrustError

app = typer.Typer(name="approvals", help="List pending approval requests and approve or deny them.")

ReviewerOption = Annotated[str | None, typer.Option(
    "--reviewer", help="Your name in the approver groups: your credential's (optional), or with trust off.",
)]
SHORT_ID = 8
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]
RequestArgument = Annotated[str, typer.Argument(help="The request id, or a unique prefix of it.")]


def _fail(exc: ReviewError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


@dataclass(frozen=True)
class _Where:
    bootstrap: str
    topics: TopicNames
    trust: ReviewTrust
    settings: Settings


def _where(command: str) -> _Where:
    """Where to read and how to verify; ReviewError when trust is neither configured nor off."""
    settings = Settings()
    try:
        trust = ReviewTrust.configure(settings.trust_public_key, settings.trust_off, who=command)
    except TrustError as exc:
        raise ReviewError(str(exc)) from exc
    return _Where(settings.bootstrap_servers, TopicNames(settings.topic_prefix), trust, settings)


def _report(ignored: list[Ignored]) -> None:
    """Name the records that were not taken (on stderr: a forged request is worth knowing about)."""
    for item in ignored:
        typer.echo(f"ignored {item}", err=True)


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
    try:
        where = _where("sluicegate approvals list")
        pending = asyncio.run(pending_requests(where.bootstrap, where.topics, datetime.now(UTC),
                                               trust=where.trust,
                                               options=where.settings.kafka_client_options()))
    except ReviewError as exc:
        raise _fail(exc) from None
    _report(pending.ignored)
    if as_json:
        for item in pending.requests:
            typer.echo(json.dumps(_row(item), sort_keys=True))
        return
    if not pending.requests:
        typer.echo("No pending approval requests.")
        return
    table = Table("request", "agent", "tool", "target", "group", "quorum", "risk", "deadline",
                  caption="request ids are shortened; any unique prefix works with approve/deny")
    for item in pending.requests:
        row = _row(item)
        deadline = f"{row['deadline_at']}" + (" (overdue)" if item.overdue else "")
        table.add_row(
            str(row["request_id"])[:SHORT_ID], str(row["agent_id"]), f"{row['tool']} {row['action']}",
            str(row["target"]), str(row["approver_group"]), str(row["quorum"]), f"{row['risk']:.2f}",
            deadline,
        )
    Console().print(table)


def _send(command: str, request_id: str, name: str | None, verdict: VerdictKind, reason: str | None) -> None:
    """Resolve the reviewer (credential) first: nothing is read or sent without it."""
    try:
        where = _where(f"sluicegate approvals {command}")
        credential = where.settings.reviewer_credential
        reviewer = Reviewer.resolve(credential.get_secret_value() if credential is not None else None, name,
                                    trust_off=where.trust.off)
        sent = asyncio.run(submit_verdict(
            where.bootstrap, where.topics, request_id, reviewer=reviewer, verdict=verdict, reason=reason,
            now=datetime.now(UTC), trust=where.trust, options=where.settings.kafka_client_options(),
        ))
    except ReviewError as exc:
        raise _fail(exc) from None
    signed = "signed" if reviewer.credential is not None else "unsigned: trust is off"
    typer.echo(f"{sent.verdict.value} by {sent.reviewer} ({signed}) sent for {sent.request_id}; the "
               "processor checks it (signer, group, owner, digest, deadline)"
               " and the agent gets the final decision.")


@app.command()
def approve(request_id: RequestArgument, reviewer: ReviewerOption = None) -> None:
    """Approve a pending request (signed with SLUICEGATE_REVIEWER_CREDENTIAL)."""
    _send("approve", request_id, reviewer, VerdictKind.APPROVE, None)


@app.command()
def deny(
    request_id: RequestArgument,
    reason: Annotated[str, typer.Option("--reason", help="Why the action is denied (shown to the agent).")],
    reviewer: ReviewerOption = None,
) -> None:
    """Deny a pending request, with a reason (signed with SLUICEGATE_REVIEWER_CREDENTIAL)."""
    _send("deny", request_id, reviewer, VerdictKind.DENY, reason)
