"""Session fixtures for the real components: a Kafka broker and a ClickHouse engine.

Each is chosen in this order: an environment variable (``KAFKA_BOOTSTRAP_SERVERS``,
``SLUICEGATE_CLICKHOUSE_URL``), testcontainers when a Docker engine answers, else the local launcher
(``infra.kafka``, on a free port with a temporary data dir) / the embedded chDB engine in a temp dir.
Tests isolate themselves with ``unique_name`` (topic prefixes, database names).
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from clickhouse_connect.driver.client import Client

from infra.clickhouse import open_client
from infra.kafka import BrokerConfig, LauncherError, start_broker, stop_broker
from infra.kafka.process import free_port
from sluicegate.settings import Settings

PORT_ATTEMPTS = 3


@functools.cache
def docker_answers() -> bool:
    """A Docker engine answers a ping within two seconds."""
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@dataclass(frozen=True)
class KafkaService:
    """The session's broker: its bootstrap address, and the launcher config when we started it."""

    bootstrap: str
    local: BrokerConfig | None


def _launch_local(tmp_path_factory: pytest.TempPathFactory) -> BrokerConfig:
    settings = Settings()
    data_dir = tmp_path_factory.mktemp("kafka")
    for attempt in range(PORT_ATTEMPTS):
        config = BrokerConfig(
            port=free_port(),
            data_dir=data_dir,
            cache_dir=settings.artifact_cache_dir.resolve(),
            version=settings.kafka_version,
        )
        try:
            start_broker(config)
            return config
        except LauncherError as exc:  # another process grabbed the free port between probe and start
            if "already in use" not in str(exc) or attempt == PORT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def kafka_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaService]:
    """The session's Kafka: ``KAFKA_BOOTSTRAP_SERVERS``, else testcontainers, else the local launcher."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield KafkaService(configured, None)
    elif docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield KafkaService(container.get_bootstrap_server(), None)
    else:
        config = _launch_local(tmp_path_factory)
        try:
            yield KafkaService(f"127.0.0.1:{config.port}", config)
        finally:
            stop_broker(config.data_dir)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_service: KafkaService) -> str:
    """``host:port`` of a real Kafka broker shared by the session."""
    return kafka_service.bootstrap


@pytest.fixture
def unique_name() -> str:
    """A fresh identifier for topic prefixes and database names: ``t`` + 10 hex characters."""
    return "t" + secrets.token_hex(5)


@pytest.fixture(scope="session")
def clickhouse_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``SLUICEGATE_CLICKHOUSE_URL``, else a testcontainers ClickHouse server, else embedded chDB."""
    configured = os.environ.get("SLUICEGATE_CLICKHOUSE_URL")
    if configured:
        yield configured
    elif docker_answers():
        from testcontainers.community.clickhouse import ClickHouseContainer

        with ClickHouseContainer() as container:
            host, port = container.get_container_host_ip(), container.get_exposed_port(8123)
            yield f"http://{container.username}:{container.password}@{host}:{port}/"
    else:
        yield f"chdb://{tmp_path_factory.mktemp('clickhouse')}"


@pytest.fixture(scope="session")
def clickhouse_client(clickhouse_url: str) -> Client:
    """A clickhouse-connect client for ``clickhouse_url`` (for chDB: the process's one engine)."""
    return open_client(clickhouse_url)
