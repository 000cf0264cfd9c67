"""``sluicegate schemas export DIR``: JSON Schema files of the wire contract."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from schemas.export import SCHEMA_DIR, export

app = typer.Typer(name="schemas", help="The wire contract as JSON Schema.", no_args_is_help=True)


@app.command("export")
def export_command(
    directory: Annotated[Path, typer.Argument(help=f"Output directory (committed copy: {SCHEMA_DIR}).")],
) -> None:
    """Write one <model>.schema.json per wire model and for the policy document."""
    for path in export(directory):
        typer.echo(str(path))
