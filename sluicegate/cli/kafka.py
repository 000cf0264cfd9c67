"""``sluicegate kafka start|stop|status|acls``: the local Apache Kafka broker (see ``infra.kafka``) and
the deployment's ACL matrix."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer

from infra.kafka import BrokerConfig, BrokerStatus, LauncherError, broker_status, start_broker, stop_broker
from infra.kafka.acls import AclError, apply, matrix
from infra.kafka.secure import (
    ADMIN,
    PROTOCOL,
    PROTOCOLS,
    ROLES,
    Credentials,
    client_options,
    listener_of,
    settings_lines,
)
from sluicegate.settings import KafkaOptions, Settings

app = typer.Typer(name="kafka", help="Run a local single-node Kafka broker (KRaft) on loopback.")

PortOption = Annotated[
    int | None, typer.Option("--port", help="Listener port [default: SLUICEGATE_KAFKA_PORT or 9092].")
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data dir [default: SLUICEGATE_KAFKA_DATA_DIR or .state/kafka/data]"),
]


def _config(port: int | None, data_dir: Path | None, secure: bool = False,
            protocol: str = PROTOCOL) -> BrokerConfig:
    return BrokerConfig.from_settings(Settings(), port=port, data_dir=data_dir, secure=secure,
                                      protocol=protocol)


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


@app.command()
def start(
    port: PortOption = None, data_dir: DataDirOption = None,
    secure: Annotated[bool, typer.Option("--secure", help="SASL/SCRAM, ACLs and one user per role; "
                                         "prints each role's settings.")] = False,
    protocol: Annotated[str, typer.Option(
        "--protocol", help=f"With --secure: the client listener, one of {', '.join(PROTOCOLS)} (SSL: mutual "
        "TLS, a certificate per role). TLS certificates are made under <data dir>/tls.")] = PROTOCOL,
) -> None:
    """Start the broker (fetching its jars once) and return when it answers; no-op if it runs."""
    protocol = protocol.upper()
    if protocol not in PROTOCOLS:
        raise _fail(ValueError(f"--protocol is one of {', '.join(PROTOCOLS)}, not {protocol}"))
    if protocol != PROTOCOL and not secure:
        raise _fail(ValueError("--protocol needs --secure"))
    config = _config(port, data_dir, secure, protocol)
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
    credentials = Credentials.load(config.data_dir) if secure else None
    if credentials is not None:
        listener = listener_of(config.data_dir)
        how = "mutual TLS (a certificate per role)" if listener.protocol == "SSL" else \
            f"{listener.protocol}/SCRAM-SHA-512"
        typer.echo(f"{how}, ACLs on (super user {ADMIN!r}; its password is in "
                   f"{config.data_dir / 'credentials.json'}). Apply the ACL matrix: "
                   "sluicegate kafka acls --apply")
        if listener.tls is not None:
            typer.echo("Every client trusts the broker's throwaway CA (in each role's lines below):\n"
                       f"SLUICEGATE_KAFKA_SSL_CAFILE={listener.tls.ca_file}")
        for role in ROLES:
            typer.echo(f"\n# {role}")
            typer.echo("\n".join(settings_lines(role, current.bootstrap_servers, credentials, listener)))


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


PrefixOption = Annotated[str | None, typer.Option("--prefix", help="Topic prefix [default: settings].")]


def _admin_access(settings: Settings, data_dir: Path | None) -> tuple[str, KafkaOptions]:
    """Where and as whom ACLs are applied: the settings' SASL user when configured (it must be a super
    user), else the local secure broker's super user."""
    if settings.kafka_security_protocol != "PLAINTEXT":
        return settings.bootstrap_servers, settings.kafka_client_options()
    config = BrokerConfig.from_settings(settings, data_dir=data_dir)
    credentials = Credentials.load(config.data_dir)
    if credentials is None:
        raise LauncherError(f"no SASL settings and no secure broker in {config.data_dir}: set "
                            "SLUICEGATE_KAFKA_* to a super user, or start one with "
                            "`sluicegate kafka start --secure`")
    status = broker_status(config.data_dir)
    return status.bootstrap_servers, client_options(ADMIN, credentials.password(ADMIN),
                                                    listener_of(config.data_dir))


@app.command()
def acls(
    prefix: PrefixOption = None, data_dir: DataDirOption = None,
    do_apply: Annotated[bool, typer.Option("--apply", help="Create them on the cluster (as a super user).")]
    = False,
) -> None:
    """Print the ACL matrix of a topic prefix (one line per ALLOW entry); with --apply, create it."""
    settings = Settings()
    entries = matrix(prefix or settings.topic_prefix)
    typer.echo("\n".join(acl.line() for acl in entries))
    if not do_apply:
        return
    try:
        bootstrap, options = _admin_access(settings, data_dir)
        sent = asyncio.run(apply(bootstrap, entries, options))
    except (LauncherError, AclError) as exc:
        raise _fail(exc) from None
    typer.echo(f"applied {sent} ACLs on {bootstrap}")
