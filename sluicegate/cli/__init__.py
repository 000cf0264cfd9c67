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


def main() -> None:
    """Entry point of the console script."""
    _register()
    app()
