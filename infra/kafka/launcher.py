"""Start, probe and stop one local Kafka node (KRaft: broker + controller) on loopback.

The data directory holds everything of one broker: ``server.properties`` and ``log4j.properties``
(rendered at each start), ``cluster.id`` (made once), ``kraft/`` (formatted once), ``broker.json``
(pid and ports while it runs) and ``broker.log``. A secure broker (``secure``: SASL/SCRAM and ACLs,
:mod:`infra.kafka.secure`) also holds ``credentials.json``, and with TLS (``protocol`` SASL_SSL or SSL)
``tls/`` (:mod:`infra.kafka.tls`); a data dir is secure or not from its first start on, its protocol is
the one of its latest start.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from infra.kafka.artifacts import ensure_artifacts
from infra.kafka.process import (
    LauncherError,
    cmdline,
    exit_code,
    file_lock,
    find_java,
    free_port,
    pid_alive,
    port_is_free,
    spawn_detached,
    tail,
)
from infra.kafka.protocol import ProtocolError, request_metadata
from infra.kafka.secure import (
    ADMIN,
    ROLES,
    SASL_PLAINTEXT,
    Credentials,
    Listener,
    format_arguments,
    listener_of,
    probe_secure,
    server_properties,
)
from infra.kafka.templates import render_file
from infra.kafka.tls import ensure_certificates
from sluicegate.secret_files import write_private
from sluicegate.settings import Settings

HOST = "127.0.0.1"
NODE_ID = 1
STATE_FILE = "broker.json"
LOG_FILE = "broker.log"
CLUSTER_ID_FILE = "cluster.id"
KRAFT_DIR = "kraft"
MAIN_CLASS = "kafka.Kafka"
LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how one local broker runs."""

    port: int
    data_dir: Path
    cache_dir: Path
    version: str
    heap: str = "512m"
    start_timeout_s: float = 120.0
    stop_timeout_s: float = 30.0
    secure: bool = False
    """SASL/SCRAM, the standard authorizer and one user per role (:mod:`infra.kafka.secure`)."""
    protocol: str = SASL_PLAINTEXT.protocol
    """A secure broker's client listener: SASL_PLAINTEXT, SASL_SSL or SSL (mutual TLS)."""
    node_id: int = NODE_ID
    quorum: tuple[tuple[int, int], ...] = ()
    """A node of a cluster (:mod:`infra.kafka.cluster`): every controller's (node id, port); empty for
    a single node, whose controller port is picked at start."""

    @property
    def replicas(self) -> int:
        """The cluster's size: the replication factor of its internal topics and of new topics."""
        return max(1, len(self.quorum))

    @classmethod
    def from_settings(
        cls, settings: Settings, *, port: int | None = None, data_dir: Path | None = None,
        secure: bool = False, protocol: str = SASL_PLAINTEXT.protocol,
    ) -> BrokerConfig:
        """The settings' broker, with the CLI's overrides (``--port``, ``--data-dir``, ``--secure``,
        ``--protocol``)."""
        return cls(
            port=port if port is not None else settings.kafka_port,
            data_dir=(data_dir or settings.broker_data_dir).resolve(),
            cache_dir=settings.artifact_cache_dir.resolve(),
            version=settings.kafka_version,
            secure=secure,
            protocol=protocol,
        )


@dataclass(frozen=True)
class BrokerStatus:
    """What is known about the broker of one data directory."""

    data_dir: Path
    port: int | None
    pid: int | None
    ready: bool

    @property
    def running(self) -> bool:
        """A broker process of this data directory is alive."""
        return self.pid is not None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"{HOST}:{self.port}"


class StartResult(NamedTuple):
    """The outcome of :func:`start_broker`: the status, and whether this call started the process."""

    status: BrokerStatus
    started: bool


def new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID, URL-safe base64 without padding (22 characters).

    Never starting with ``-``: the storage tool would read such an id as an option (Kafka's own
    generator draws again for the same reason).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not cluster_id.startswith("-"):
            return cluster_id


PLAINTEXT_LISTENER = {"LISTENER": "PLAINTEXT", "CONTROLLER_PROTOCOL": "PLAINTEXT", "SECURITY": ""}


def render_server_properties(port: int, controller_port: int, log_dir: Path,
                             credentials: Credentials | None = None, *, node_id: int = NODE_ID,
                             quorum: tuple[tuple[int, int], ...] = (),
                             secure_listener: Listener = SASL_PLAINTEXT) -> str:
    """The configuration of one KRaft node (broker and controller) on loopback: a single-node cluster,
    or a node of the cluster of ``quorum``; secure with ``credentials``, on ``secure_listener``."""
    listener = PLAINTEXT_LISTENER if credentials is None else server_properties(credentials, secure_listener)
    voters = quorum or ((node_id, controller_port),)
    replicas = len(voters)
    return render_file(
        "server.properties",
        {
            "NODE_ID": node_id,
            "VOTERS": ",".join(f"{node}@{HOST}:{cport}" for node, cport in voters),
            "HOST": HOST,
            "PORT": port,
            "CONTROLLER_PORT": controller_port,
            "LOG_DIR": log_dir,
            "REPLICAS": replicas,
            "MIN_ISR": min(2, replicas),
            **listener,
        },
    )


def java_command(java: str, libs: Path, data_dir: Path, heap: str) -> list[str]:
    """The JVM command line that runs the broker of ``data_dir``."""
    return [
        java,
        f"-Xmx{heap}",
        "-Xms64m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{data_dir / 'log4j.properties'}",
        f"-Dkafka.logs.dir={data_dir}",
        "-cp",
        f"{libs}/*",
        MAIN_CLASS,
        str(data_dir / "server.properties"),
    ]


def _read_state(data_dir: Path) -> dict[str, int]:
    try:
        raw = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: int(v) for k, v in raw.items() if k in ("pid", "port", "controller_port", "node_id")}


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    """``pid`` is alive and is the broker of ``data_dir`` (not a recycled pid)."""
    if not pid_alive(pid):
        return False
    command = cmdline(pid)
    return command is None or (MAIN_CLASS in command and str(data_dir) in command)


def _probe(port: int, cluster_id: str | None, timeout_s: float = 2.0,
           credentials: Credentials | None = None, node_id: int = NODE_ID,
           listener: Listener = SASL_PLAINTEXT) -> bool:
    """The broker on ``port`` answers a Metadata request listing itself (and our cluster id, if known);
    a secure one, after authenticating its super user."""
    if credentials is not None:
        return probe_secure(f"{HOST}:{port}", credentials, cluster_id, timeout_s, listener)
    try:
        answer = request_metadata(HOST, port, timeout_s=timeout_s)
    except (OSError, ProtocolError):
        return False
    listed = any(b.node_id == node_id and b.port == port for b in answer.brokers)
    return listed and (cluster_id is None or answer.cluster_id == cluster_id)


def _cluster_id(data_dir: Path) -> str | None:
    try:
        return (data_dir / CLUSTER_ID_FILE).read_text().strip() or None
    except OSError:
        return None


def _configured_port(data_dir: Path) -> int | None:
    """The listener port of the last start, from the rendered ``server.properties``."""
    try:
        text = (data_dir / "server.properties").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        port = line.rpartition(":")[2]
        if line.startswith("advertised.listeners=") and port.isdigit():
            return int(port)
    return None


def broker_status(data_dir: Path) -> BrokerStatus:
    """The status of the broker of ``data_dir``: pid when alive, port, and whether it answers metadata."""
    data_dir = data_dir.resolve()
    state = _read_state(data_dir)
    pid, port = state.get("pid"), state.get("port") or _configured_port(data_dir)
    if pid is None or not _is_our_broker(pid, data_dir):
        return BrokerStatus(data_dir, port, None, False)
    ready = port is not None and _probe(port, _cluster_id(data_dir), credentials=Credentials.load(data_dir),
                                        node_id=state.get("node_id", NODE_ID), listener=listener_of(data_dir))
    return BrokerStatus(data_dir, port, pid, ready)


def _format_storage(java: str, libs: Path, data_dir: Path, cluster_id: str,
                    credentials: Credentials | None) -> None:
    argv = [java, "-Xmx256m", "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format"]
    argv += ["-t", cluster_id, "-c", str(data_dir / "server.properties"), "--ignore-formatted"]
    argv += format_arguments(credentials) if credentials is not None else []
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).splitlines()[-LOG_TAIL_LINES:])
        raise LauncherError(f"formatting the Kafka storage in {data_dir / KRAFT_DIR} failed:\n{output}")


def _credentials(config: BrokerConfig) -> Credentials | None:
    """The secure broker's users (made on its first start), None for an open one; a data dir keeps the
    mode of its first start."""
    data_dir = config.data_dir
    credentials = Credentials.load(data_dir)
    formatted = (data_dir / KRAFT_DIR / "meta.properties").is_file()
    if config.secure and credentials is None:
        if formatted:
            raise LauncherError(f"{data_dir} holds a broker started without --secure: its users cannot be "
                                "added now; use another --data-dir")
        credentials = Credentials.generate()
        credentials.save(data_dir)
    if not config.secure and credentials is not None:
        raise LauncherError(f"{data_dir} holds a secure broker: start it with --secure")
    return credentials


def _prepare(config: BrokerConfig, java: str, libs: Path, controller_port: int) -> None:
    """Write the configuration and format the storage on first use (keeping the cluster id)."""
    data_dir = config.data_dir
    credentials = _credentials(config)
    cluster_id = _cluster_id(data_dir)
    if cluster_id is None:
        cluster_id = new_cluster_id()
        (data_dir / CLUSTER_ID_FILE).write_text(cluster_id + "\n")
    kraft = data_dir / KRAFT_DIR
    listener = Listener(config.protocol, ensure_certificates(data_dir, (ADMIN, *ROLES))
                        if config.secure and config.protocol.endswith("SSL") else None)
    write_private(data_dir / "server.properties",
                  render_server_properties(config.port, controller_port, kraft, credentials,
                                           node_id=config.node_id, quorum=config.quorum,
                                           secure_listener=listener))
    (data_dir / "log4j.properties").write_text(render_file("log4j.properties", {}))
    if not (kraft / "meta.properties").is_file():
        _format_storage(java, libs, data_dir, cluster_id, credentials)


def _rotate_log(log: Path) -> None:
    if log.exists():
        log.replace(log.with_name(LOG_FILE + ".1"))


def wait_ready(config: BrokerConfig, pid: int) -> None:
    """Return once the broker (of ``pid``, from :func:`launch_broker`) answers metadata; LauncherError with
    its log tail if it dies or times out."""
    log = config.data_dir / LOG_FILE
    cluster_id = _cluster_id(config.data_dir)
    credentials = Credentials.load(config.data_dir)
    listener = listener_of(config.data_dir)
    deadline = time.monotonic() + config.start_timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            code = exit_code(pid)
            (config.data_dir / STATE_FILE).unlink(missing_ok=True)
            how = f" with code {code}" if code is not None else ""
            raise LauncherError(
                f"the Kafka broker exited{how} during start; last lines of {log}:\n"
                + tail(log, LOG_TAIL_LINES)
            )
        if _probe(config.port, cluster_id, timeout_s=1.0, credentials=credentials, node_id=config.node_id,
                  listener=listener):
            return
        time.sleep(0.1)  # polling an external process: there is no event to await
    stop_broker(config.data_dir, timeout_s=config.stop_timeout_s)
    raise LauncherError(
        f"the Kafka broker did not answer within {config.start_timeout_s:.0f} s; "
        f"last lines of {log}:\n{tail(log, LOG_TAIL_LINES)}"
    )


def start_broker(config: BrokerConfig) -> StartResult:
    """Start the broker of ``config.data_dir`` unless it already runs; return once it answers metadata."""
    config, pid, started = launch_broker(config)
    wait_ready(config, pid)
    return StartResult(broker_status(config.data_dir), started=started)


def launch_broker(config: BrokerConfig) -> tuple[BrokerConfig, int, bool]:
    """Spawn the broker of ``config.data_dir`` unless it already runs, without waiting for it (the nodes
    of a cluster answer only once a quorum of them runs): the config with its resolved data dir, the
    pid, and whether this call spawned it."""
    data_dir = config.data_dir.resolve()
    config = dataclasses.replace(config, data_dir=data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(data_dir / ".lock"):
        state = _read_state(data_dir)
        pid = state.get("pid")
        if pid is not None and _is_our_broker(pid, data_dir):
            if state.get("port") != config.port:
                raise LauncherError(
                    f"the broker of {data_dir} already runs on port {state.get('port')} (pid {pid}); "
                    "stop it first to change the port"
                )
            return config, pid, False
        (data_dir / STATE_FILE).unlink(missing_ok=True)
        if not port_is_free(HOST, config.port):
            raise LauncherError(
                f"port {config.port} is already in use by another process; choose another with --port"
            )
        java = find_java()
        libs = ensure_artifacts(config.version, config.cache_dir)
        controller_port = dict(config.quorum).get(config.node_id) or free_port(HOST)
        _prepare(config, java, libs, controller_port)
        log = data_dir / LOG_FILE
        _rotate_log(log)
        pid = spawn_detached(java_command(java, libs, data_dir, config.heap), cwd=data_dir, log=log)
        state_json = {"pid": pid, "port": config.port, "controller_port": controller_port,
                      "node_id": config.node_id}
        (data_dir / STATE_FILE).write_text(json.dumps(state_json) + "\n")
        return config, pid, True


def stop_broker(data_dir: Path, timeout_s: float = 30.0) -> bool:
    """Stop the broker of ``data_dir`` (SIGTERM, then SIGKILL after ``timeout_s``); False if none ran."""
    data_dir = data_dir.resolve()
    state = _read_state(data_dir)
    pid = state.get("pid")
    if pid is None or not _is_our_broker(pid, data_dir):
        (data_dir / STATE_FILE).unlink(missing_ok=True)
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling an external process: there is no event to await
    if pid_alive(pid):
        _signal_group(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.05)
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
