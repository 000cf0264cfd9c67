"""``sluicegate kafka start|stop|status``: the local Apache Kafka broker (see ``infra.kafka``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from infra.kafka import BrokerConfig, BrokerStatus, LauncherError, broker_status, start_broker, stop_broker
from sluicegate.settings import Settings

app = typer.Typer(name="kafka", help="Run a local single-node Kafka broker (KRaft) on loopback.")

PortOption = Annotated[
    int | None, typer.Option("--port", help="Listener port [default: SLUICEGATE_KAFKA_PORT or 9092].")
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data dir [default: SLUICEGATE_KAFKA_DATA_DIR or .state/kafka/data]"),
]


def _config(port: int | None, data_dir: Path | None) -> BrokerConfig:
    return BrokerConfig.from_settings(Settings(), port=port, data_dir=data_dir)


def _fail(exc: LauncherError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


@app.command()
def start(port: PortOption = None, data_dir: DataDirOption = None) -> None:
    """Start the broker (fetching its jars once) and return when it answers; no-op if it runs."""
    config = _config(port, data_dir)
    began = time.monotonic()
    try:
        current, started = start_broker(config)
    except LauncherError as exc:
        raise _fail(exc) from None
    where = f"{current.bootstrap_servers} (pid {current.pid}, data {current.data_dir})"
    if started:
        typer.echo(f"Kafka {config.version} is up on {where} in {time.monotonic() - began:.1f} s")
    else:
        typer.echo(f"Kafka is already running on {where}")


@app.command()
def stop(data_dir: DataDirOption = None) -> None:
    """Stop the broker of the data directory; fine if none runs."""
    config = _config(None, data_dir)
    before = broker_status(config.data_dir)
    try:
        stopped = stop_broker(config.data_dir, timeout_s=config.stop_timeout_s)
    except LauncherError as exc:
        raise _fail(exc) from None
    if stopped:
        typer.echo(f"Stopped the Kafka broker (pid {before.pid}, data {config.data_dir})")
    else:
        typer.echo(f"No Kafka broker is running for {config.data_dir}")


def describe(status: BrokerStatus, default_port: int) -> str:
    """The ``status`` report: one ``key: value`` line each for pid, port, data dir and readiness."""
    return "\n".join(
        [
            f"pid: {status.pid if status.pid is not None else '-'}",
            f"port: {status.port if status.port is not None else default_port}",
            f"data dir: {status.data_dir}",
            f"ready: {'yes' if status.ready else 'no'}",
        ]
    )


@app.command()
def status(port: PortOption = None, data_dir: DataDirOption = None) -> None:
    """Print the broker's pid, port, data directory and readiness; exit 1 unless it is ready."""
    config = _config(port, data_dir)
    current = broker_status(config.data_dir)
    typer.echo(describe(current, config.port))
    if not current.ready:
        raise typer.Exit(1)
