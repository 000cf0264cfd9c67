"""``sluicegate policy ...``: validate, test and publish policies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streams.engine import PolicyError, load_policy

app = typer.Typer(name="policy", help="Validate, test and publish policies.", no_args_is_help=True)


@app.command("check")
def check(file: Annotated[Path, typer.Argument(help="The policy YAML file.")]) -> None:
    """Validate a policy: print its rule count and version, or every error as file:line: message."""
    try:
        policy = load_policy(file)
    except PolicyError as exc:
        for issue in exc.issues:
            typer.echo(str(issue))
        count = len(exc.issues)
        typer.echo(f"{file}: rejected ({count} error{'s' if count != 1 else ''})", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"{file}: OK: policy {policy.name}, {policy.rule_count} rules, {len(policy.limits)} limits, "
        f"version {policy.version}"
    )
