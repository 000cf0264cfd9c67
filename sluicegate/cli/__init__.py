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
    """Attach every command group; each lives in its own module."""
    from sluicegate.cli.kafka import app as kafka_app

    app.add_typer(kafka_app, name="kafka")
    from sluicegate.cli.evaluate import evaluate_command
    from sluicegate.cli.policy import app as policy_app
    from sluicegate.cli.schemas import app as schemas_app

    app.add_typer(policy_app, name="policy")
    app.add_typer(schemas_app, name="schemas")
    app.command("evaluate")(evaluate_command)
    from sluicegate.cli.worker import worker_command

    app.command("worker")(worker_command)
    from sluicegate.cli.approvals import app as approvals_app

    app.add_typer(approvals_app, name="approvals")
    from sluicegate.cli.demo import demo_command
    from sluicegate.cli.slack import app as slack_app

    app.command("demo")(demo_command)

    app.add_typer(slack_app, name="slack")
    from sluicegate.cli.audit import register as register_audit

    register_audit(app)


def main() -> None:
    """Entry point of the console script."""
    _register()
    app()
