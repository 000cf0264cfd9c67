"""The one settings object: read from the environment (prefix ``SLUICEGATE_``), frozen, passed in."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.intent import MAX_INTENT_BYTES
from sluicegate.replies import DEFAULT_REPLY_PARTITIONS, DEFAULT_REPLY_SHARING
from sluicegate.secret_files import check_private

DEFAULT_KAFKA_VERSION = "3.9.1"
DEFAULT_KAFKA_PORT = 9092
DEFAULT_TOPIC_PREFIX = "sluicegate"
DEFAULT_PARTITIONS = 6
DEFAULT_MAX_EVENT_SKEW_S = 300.0
DEFAULT_DECISION_TIMEOUT_S = 2.0
DEFAULT_REPLICATION_FACTOR = 1
"""One copy: the local single broker. Production: 3 (with ``min.insync.replicas`` 2)."""

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
KafkaOptions = Mapping[str, Any]
"""aiokafka client keyword arguments for the cluster's security (empty: PLAINTEXT)."""
PLAINTEXT: KafkaOptions = MappingProxyType({})
"""No security options: an open listener (the local broker without ``--secure``)."""


class Settings(BaseSettings):
    """Configuration shared by the CLI, the worker, the consumers and the SDK."""

    model_config = SettingsConfigDict(env_prefix="SLUICEGATE_", frozen=True, extra="ignore")

    state_dir: Path = Field(
        default_factory=lambda: Path.cwd() / ".state",
        description="Where local state lives: broker data, artifact cache, embedded ClickHouse.",
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "SLUICEGATE_KAFKA_BOOTSTRAP_SERVERS"),
        description="An existing Kafka cluster; when unset the local launcher's broker is used.",
    )
    kafka_port: int = Field(default=DEFAULT_KAFKA_PORT, ge=1, le=65535)
    kafka_version: str = DEFAULT_KAFKA_VERSION
    kafka_data_dir: Path | None = None
    kafka_cache_dir: Path | None = None
    kafka_security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT",
        description="How every client connects: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.",
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="SSL/SASL_SSL: the CA bundle that signed the brokers' certificates.",
    )
    kafka_ssl_certfile: Path | None = Field(default=None, description="SSL: this client's certificate.")
    kafka_ssl_keyfile: Path | None = Field(
        default=None, description="SSL: this client's private key (refused unless mode 0600 or stricter).",
    )
    kafka_ssl_key_password: SecretStr | None = None
    kafka_replication_factor: int = Field(
        default=DEFAULT_REPLICATION_FACTOR, ge=1,
        description="Replication factor of every topic sluicegate creates; workers refuse smaller ones.",
    )
    kafka_min_insync_replicas: int = Field(
        default=1, ge=1, description="min.insync.replicas of every topic sluicegate creates.",
    )
    clickhouse_url: str | None = Field(
        default=None,
        description="chdb:///path for the embedded engine, http(s)://host:8123 for a server.",
    )
    audit_migrations: Literal["apply", "skip"] = Field(
        default="apply",
        description="The audit sink applies the audit schema's migrations at start (apply), or only checks "
                    "that none is pending and refuses to start if one is (skip: an insert-only ClickHouse "
                    "user; an administrator runs `sluicegate audit migrate`).",
    )
    topic_prefix: str = Field(default=DEFAULT_TOPIC_PREFIX, pattern=r"^[A-Za-z0-9._-]+$")
    partitions: int = Field(default=DEFAULT_PARTITIONS, ge=1)
    reply_partitions: int = Field(
        default=DEFAULT_REPLY_PARTITIONS, ge=1,
        description="Workers: partitions of the replies topic they create; at least agent processes / "
                    "reply_sharing (docs/replies.md).",
    )
    reply_leases: bool = Field(
        default=False,
        description="SDK: lease a partition of the replies topic and have decisions sent there, instead of "
                    "reading the decisions topic's share of the fleet's (docs/replies.md; needs workers "
                    "that know reply keys).",
    )
    reply_sharing: int = Field(
        default=DEFAULT_REPLY_SHARING, ge=1,
        description="SDK: how many agent processes may lease one reply partition (the same fleet-wide).",
    )
    decision_timeout_s: float = Field(default=DEFAULT_DECISION_TIMEOUT_S, gt=0)
    max_intent_bytes: int = Field(
        default=MAX_INTENT_BYTES, ge=1024,
        description="SDK: the largest intent (its JSON) sent; a larger one is an InvalidIntent, never sent "
                    "(workers refuse intents over 128 KiB, the default; keep it under the broker's "
                    "max.message.bytes).",
    )
    max_event_skew_s: float = Field(
        default=DEFAULT_MAX_EVENT_SKEW_S, ge=0,
        description="A worker BLOCKs intents whose occurred_at is further than this from its clock "
                    "(windows count in event time); 0: no limit.",
    )
    reviewers_file: Path | None = Field(
        default=None,
        description="YAML of approver groups (groups: {name: [reviewer, ...]}); none: nobody approves.",
    )
    trust_keys: SecretStr | None = Field(
        default=None,
        description="Workers: the deployment's master key ring (sluicegate trust init); set: trust is on.",
    )
    trust_signing_key: SecretStr | None = Field(
        default=None, description="Workers: the Ed25519 key that signs approval requests.",
    )
    trust_public_key: str | None = Field(
        default=None, description="Slack bot and CLI: the workers' public key, to verify approval requests.",
    )
    trust_off: bool = Field(
        default=False,
        description="Workers: run without credentials (a first local try); every message is taken as is.",
    )
    agent_credential: SecretStr | None = Field(
        default=None, description="SDK: the agent's credential (sluicegate trust agent); fixes its identity.",
    )
    reviewer_credential: SecretStr | None = Field(
        default=None, description="CLI: the reviewer's credential (sluicegate trust reviewer).",
    )
    bot_credential: SecretStr | None = Field(
        default=None, description="Slack bot: its credential (sluicegate trust bot).",
    )
    publisher_credential: SecretStr | None = Field(
        default=None, description="sluicegate policy publish: the publisher's credential.",
    )
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_reviewers_file: Path | None = Field(
        default=None, description="YAML mapping Slack user ids to reviewer names (users: {U123: alice})."
    )
    slack_default_channel: str | None = None
    slack_host: str = "0.0.0.0"
    slack_port: int = Field(default=3000, ge=1, le=65535)
    slack_api_url: str | None = Field(default=None, description="Slack Web API base URL (proxies, tests).")
    slack_state_file: Path | None = None

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> Self:
        """SASL needs a mechanism, user and password; client certificates come in pairs; ISR <= RF."""
        if self.kafka_security_protocol.startswith("SASL_"):
            names = ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
            missing = [f"SLUICEGATE_{name.upper()}" for name in names if getattr(self, name) is None]
            if missing:
                raise ValueError(f"{self.kafka_security_protocol} needs {', '.join(missing)}")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("SLUICEGATE_KAFKA_SSL_CERTFILE and SLUICEGATE_KAFKA_SSL_KEYFILE go together")
        if self.kafka_min_insync_replicas > self.kafka_replication_factor:
            raise ValueError(f"SLUICEGATE_KAFKA_MIN_INSYNC_REPLICAS ({self.kafka_min_insync_replicas}) is "
                             "larger than SLUICEGATE_KAFKA_REPLICATION_FACTOR "
                             f"({self.kafka_replication_factor})")
        return self

    def kafka_client_options(self) -> dict[str, Any]:
        """The security keyword arguments of every aiokafka client (producer, consumer, admin).

        Empty for PLAINTEXT. Raises SecretFileError when the client key is readable by others.
        """
        protocol = self.kafka_security_protocol
        if protocol == "PLAINTEXT":
            return {}
        options: dict[str, Any] = {"security_protocol": protocol}
        if protocol.startswith("SASL_"):
            assert self.kafka_sasl_password is not None
            options.update(sasl_mechanism=self.kafka_sasl_mechanism,
                           sasl_plain_username=self.kafka_sasl_username,
                           sasl_plain_password=self.kafka_sasl_password.get_secret_value())
        if protocol.endswith("SSL"):
            options["ssl_context"] = self.kafka_ssl_context()
        return options

    def kafka_ssl_context(self) -> ssl.SSLContext:
        """TLS for SSL and SASL_SSL: the configured CA (else the system's), the client certificate if any."""
        context = ssl.create_default_context(
            cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile is not None else None)
        if self.kafka_ssl_certfile is not None and self.kafka_ssl_keyfile is not None:
            check_private(self.kafka_ssl_keyfile)
            password = self.kafka_ssl_key_password
            context.load_cert_chain(str(self.kafka_ssl_certfile), str(self.kafka_ssl_keyfile),
                                    password.get_secret_value() if password is not None else None)
        return context

    @cached_property
    def bootstrap_servers(self) -> str:
        """The Kafka bootstrap address: the configured cluster, else the local broker."""
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_port}"

    @cached_property
    def broker_data_dir(self) -> Path:
        """Where the local broker keeps its log segments and metadata."""
        return self.kafka_data_dir or self.state_dir / "kafka" / "data"

    @cached_property
    def artifact_cache_dir(self) -> Path:
        """Where the broker's jars from Maven Central are cached (shared across data dirs)."""
        return self.kafka_cache_dir or Path.home() / ".cache" / "sluicegate" / "kafka"

    @cached_property
    def slack_posted_file(self) -> Path:
        """Where the Slack bot records the requests it has posted, so restarts do not repost."""
        return self.slack_state_file or self.state_dir / "slack" / "posted.jsonl"

    @cached_property
    def audit_url(self) -> str:
        """The ClickHouse URL: the configured one, else the embedded engine under the state dir."""
        return self.clickhouse_url or f"chdb://{(self.state_dir / 'audit').resolve()}"
