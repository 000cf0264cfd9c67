"""``sluicegate webhook run``: POST approval requests and their finals to the approver groups' URLs.

Needs ``SLUICEGATE_TRUST_PUBLIC_KEY`` (only requests and finals the workers signed are delivered) unless
trust is off, and a targets file naming each group's URLs and the variables holding their secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Annotated

import typer

from schemas import TopicNames
from sluicegate.settings import Settings

app = typer.Typer(name="webhook", help="Notify reviewers by signed webhooks (besides or instead of Slack).")


@app.command("run")
def run_command(
    targets: Annotated[Path, typer.Option(
        "--targets", help="YAML: groups: {group: [{url: ..., secret_env: VAR}]}.")],
    state: Annotated[Path | None, typer.Option(
        "--state", help="Deliveries already made (default: <state_dir>/webhook/delivered.jsonl).")] = None,
    attempts: Annotated[int, typer.Option("--attempts", min=1, help="Tries per delivery.")] = 8,
) -> None:
    """Deliver every approval request (and its final decision) to its group's receivers, signed with
    HMAC-SHA256 (X-Sluicegate-Signature), retried with backoff, never twice across restarts."""
    from consumers.webhook_notifier import DeliveredStore, WebhookConfigError, WebhookNotifier, load_targets
    from sluicegate.cli.review import ReviewTrust
    from sluicegate.trust import TrustError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    try:
        receivers = load_targets(targets)
        trust = ReviewTrust.configure(settings.trust_public_key, settings.trust_off,
                                      who="sluicegate webhook run")
    except (WebhookConfigError, TrustError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    notifier = WebhookNotifier(
        settings.bootstrap_servers, TopicNames(settings.topic_prefix), trust, receivers,
        DeliveredStore(state or settings.state_dir / "webhook" / "delivered.jsonl"), attempts=attempts,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(notifier.run())
