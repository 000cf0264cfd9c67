"""The secure local broker (``sluicegate kafka start --secure``): SASL_PLAINTEXT with SCRAM-SHA-512 on
loopback, the standard KRaft authorizer, a super user for administration and one SCRAM user per role.
With ``--protocol SASL_SSL`` the same users authenticate over TLS; with ``--protocol SSL`` (mutual TLS)
each presents a client certificate whose common name is its user (:mod:`infra.kafka.tls`).

Every user and password is made once, when the storage is formatted (``--add-scram``), and kept in
``<data dir>/credentials.json`` (mode 0600, refused when others can read it). The controller listener
authenticates with SASL/PLAIN as the super user only (KRaft controllers cannot use SCRAM).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from infra.kafka.process import LauncherError
from infra.kafka.tls import BROKER, TlsFiles, broker_properties, client_context, tls_files
from sluicegate.secret_files import SecretFileError, read_private, write_private

CREDENTIALS_FILE = "credentials.json"
MECHANISM = "SCRAM-SHA-512"
PROTOCOL = "SASL_PLAINTEXT"
PROTOCOLS = (PROTOCOL, "SASL_SSL", "SSL")
"""What the secure broker's client listener can speak."""
ADMIN = "admin"
ROLES = ("agent", "worker", "reviewer", "sink", "publisher")
"""One SCRAM user per role of the ACL matrix (:mod:`infra.kafka.acls`), named after it."""


@dataclass(frozen=True)
class Credentials:
    """The password of the super user and of each role's user."""

    passwords: Mapping[str, str] = field(repr=False)

    @classmethod
    def generate(cls) -> Credentials:
        return cls({user: secrets.token_urlsafe(24) for user in (ADMIN, *ROLES)})

    @classmethod
    def load(cls, data_dir: Path) -> Credentials | None:
        """The credentials of a secure broker's data dir; None for a broker started without ``--secure``."""
        path = data_dir / CREDENTIALS_FILE
        if not path.exists():
            return None
        try:
            raw = json.loads(read_private(path))
        except (SecretFileError, ValueError) as exc:
            raise LauncherError(str(exc)) from None
        return cls({str(user): str(password) for user, password in raw.items()})

    def save(self, data_dir: Path) -> None:
        write_private(data_dir / CREDENTIALS_FILE, json.dumps(dict(self.passwords), indent=1) + "\n")

    def password(self, user: str) -> str:
        return self.passwords[user]


@dataclass(frozen=True)
class Listener:
    """How clients reach a secure broker: the protocol, and the TLS files for SASL_SSL and SSL."""

    protocol: str = PROTOCOL
    tls: TlsFiles | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise LauncherError(f"the secure broker speaks {', '.join(PROTOCOLS)}, not {self.protocol}")
        if self.protocol.endswith("SSL") and self.tls is None:
            raise LauncherError(f"{self.protocol} needs the broker's TLS files")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")


SASL_PLAINTEXT = Listener()
"""The default secure listener: SASL/SCRAM without TLS."""


def listener_of(data_dir: Path) -> Listener:
    """The listener of the secure broker last rendered in ``data_dir`` (its ``server.properties``); the
    default for a data dir without one (never used there: an open broker needs no client options)."""
    try:
        text = (data_dir / "server.properties").read_text()
    except OSError:
        return SASL_PLAINTEXT
    for line in text.splitlines():
        if line.startswith("inter.broker.listener.name="):
            protocol = line.partition("=")[2].strip()
            if protocol in PROTOCOLS:
                return Listener(protocol, tls_files(data_dir) if protocol.endswith("SSL") else None)
    return SASL_PLAINTEXT


def server_properties(credentials: Credentials, listener: Listener = SASL_PLAINTEXT) -> dict[str, str]:
    """The broker settings that turn on SASL/SCRAM (or mutual TLS) and the authorizer (passwords and the
    broker's key inline: the rendered file is written 0600). Controllers talk SASL_PLAINTEXT among
    themselves on loopback whatever the client listener speaks; on SSL the broker's certificate
    (``User:broker``) is a super user too, for its own inter-broker connections."""
    admin = credentials.password(ADMIN)
    client = [f"sasl.enabled.mechanisms={MECHANISM}", f"sasl.mechanism.inter.broker.protocol={MECHANISM}"]
    if listener.sasl:
        client.append(f"listener.name.{listener.protocol.lower()}.{MECHANISM.lower()}.sasl.jaas.config="
                      f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" '
                      f'password="{admin}";')
    if listener.tls is not None:
        client += broker_properties(listener.tls, client_auth=not listener.sasl)
    return {
        "LISTENER": listener.protocol,
        "CONTROLLER_PROTOCOL": PROTOCOL,
        "SECURITY": "\n".join([
            f"# Secure mode: {listener.protocol} for clients and brokers, SASL/PLAIN between controllers, "
            "ACLs.",
            *client,
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            "sasl.mechanism.controller.protocol=PLAIN",
            "listener.name.controller.plain.sasl.jaas.config="
            f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{ADMIN}" '
            f'password="{admin}" user_{ADMIN}="{admin}";',
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{ADMIN}" + ("" if listener.sasl else f";User:{BROKER}"),
            "allow.everyone.if.no.acl.found=false",
        ]),
    }


def format_arguments(credentials: Credentials) -> list[str]:
    """The storage tool's arguments that create every SCRAM user at format time."""
    arguments = []
    for user in (ADMIN, *ROLES):
        arguments += ["--add-scram", f"{MECHANISM}=[name={user},password={credentials.password(user)}]"]
    return arguments


def client_options(user: str, password: str, listener: Listener = SASL_PLAINTEXT) -> dict[str, Any]:
    """aiokafka keyword arguments for ``user`` on the secure broker."""
    if not listener.sasl:
        assert listener.tls is not None
        tls = listener.tls
        context = client_context(tls.ca_file, tls.cert_file(user), tls.key_file(user))
        return {"security_protocol": listener.protocol, "ssl_context": context}
    options: dict[str, Any] = {"security_protocol": listener.protocol, "sasl_mechanism": MECHANISM,
                               "sasl_plain_username": user, "sasl_plain_password": password}
    if listener.tls is not None:
        options["ssl_context"] = client_context(listener.tls.ca_file)
    return options


def settings_lines(role: str, bootstrap: str, credentials: Credentials,
                   listener: Listener = SASL_PLAINTEXT) -> list[str]:
    """The environment lines that give a process ``role``'s access (``SLUICEGATE_KAFKA_*``)."""
    lines = [f"SLUICEGATE_KAFKA_BOOTSTRAP_SERVERS={bootstrap}",
             f"SLUICEGATE_KAFKA_SECURITY_PROTOCOL={listener.protocol}"]
    if listener.sasl:
        lines += [f"SLUICEGATE_KAFKA_SASL_MECHANISM={MECHANISM}", f"SLUICEGATE_KAFKA_SASL_USERNAME={role}",
                  f"SLUICEGATE_KAFKA_SASL_PASSWORD={credentials.password(role)}"]
    if listener.tls is not None:
        lines.append(f"SLUICEGATE_KAFKA_SSL_CAFILE={listener.tls.ca_file}")
    if not listener.sasl and listener.tls is not None:
        lines += [f"SLUICEGATE_KAFKA_SSL_CERTFILE={listener.tls.cert_file(role)}",
                  f"SLUICEGATE_KAFKA_SSL_KEYFILE={listener.tls.key_file(role)}"]
    return lines


async def _cluster_id(bootstrap: str, options: Mapping[str, Any], timeout_ms: int) -> str | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **options)
    try:
        await admin.start()
        described = await admin.describe_cluster()
        return str(described["cluster_id"])
    finally:
        await admin.close()


def probe_secure(bootstrap: str, credentials: Credentials, cluster_id: str | None,
                 timeout_s: float = 2.0, listener: Listener = SASL_PLAINTEXT) -> bool:
    """The secure broker authenticates the super user and answers with our cluster id (run in a thread
    of its own, so it works from inside an event loop too)."""
    host, _, port = bootstrap.rpartition(":")
    try:  # not listening yet: no need for a client (and its connection errors in the log)
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError:
        return False
    options = client_options(ADMIN, credentials.password(ADMIN), listener)

    def ask() -> str | None:
        return asyncio.run(asyncio.wait_for(_cluster_id(bootstrap, options, round(timeout_s * 1000)),
                                            timeout_s * 2))

    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            answered = pool.submit(ask).result()
        except (KafkaError, OSError, TimeoutError):
            return False
    return answered is not None and (cluster_id is None or answered == cluster_id)
