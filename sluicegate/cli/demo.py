"""`sluicegate demo`: the whole system on this machine, with a simulated fleet."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from sluicegate.cli.extras import require
from sluicegate.settings import Settings


def demo_command(
    agents: Annotated[int, typer.Option(min=10, help="Simulated agents.")] = 300,
    rate: Annotated[float, typer.Option(min=1, help="Tool calls per second across the fleet.")] = 200.0,
    seconds: Annotated[float, typer.Option(min=5, help="How long the fleet runs.")] = 60.0,
    seed: Annotated[int, typer.Option(help="Seed of the simulated fleet.")] = 7,
    live: Annotated[bool, typer.Option(help="Refresh the live view (off: only the summary).")] = True,
) -> None:
    """Start Kafka, a worker, the audit sink and a reviewer; run a fleet; print the audit report."""
    # The demo runs a worker and the audit sink as child processes: both extras, checked up front.
    with require("worker", "audit", command="demo"):
        from infra.kafka import LauncherError
        from sluicegate.demo.processes import DemoError
        from sluicegate.demo.runner import DemoConfig, run_demo

    console = Console()
    try:
        run_demo(Settings(), DemoConfig(agents, rate, seconds, seed, live), console)
    except (DemoError, LauncherError) as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        raise typer.Exit(1) from exc
