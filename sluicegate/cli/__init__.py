"""The ``sluicegate`` command line: one typer app, one sub-app per concern."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="sluicegate",
    help="Execution containment for fleets of AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    """Attach every command group; each lives in its own module (imported here, when the CLI runs)."""
    from sluicegate.cli import (
        approvals,
        audit,
        demo,
        evaluate,
        kafka,
        mcp,
        policy,
        schemas,
        slack,
        trust,
        webhook,
        worker,
    )

    app.add_typer(kafka.app, name="kafka")
    app.add_typer(policy.app, name="policy")
    app.add_typer(trust.app, name="trust")
    app.command("evaluate")(evaluate.evaluate_command)
    app.command("explain")(evaluate.explain_command)
    app.command("worker")(worker.worker_command)
    app.add_typer(approvals.app, name="approvals")
    app.add_typer(slack.app, name="slack")
    app.add_typer(mcp.app, name="mcp")
    app.add_typer(webhook.app, name="webhook")
    audit.register(app)
    app.add_typer(schemas.app, name="schemas")
    app.command("demo")(demo.demo_command)


def main() -> None:
    """Entry point of the console script: a command that cannot reach Kafka or ClickHouse ends with one
    line naming what it tried, not a traceback (:mod:`sluicegate.cli.unreachable`)."""
    from sluicegate.cli.unreachable import one_line, quiet_client_logs

    _register()
    quiet_client_logs()
    one_line(app)
