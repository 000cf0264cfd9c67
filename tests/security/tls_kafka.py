"""A secure local broker on TLS (``sluicegate kafka start --secure --protocol SASL_SSL|SSL``) for one test
module, with the settings lines ``kafka start`` prints for each role."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from infra.kafka import BrokerConfig, start_broker, stop_broker
from infra.kafka.acls import apply, matrix
from infra.kafka.admin import ensure_topics
from infra.kafka.process import free_port
from infra.kafka.secure import ADMIN, Credentials, Listener, client_options, listener_of, settings_lines
from schemas import TopicNames
from sluicegate.settings import Settings
from streams.topology import WorkerTopics


@dataclass(frozen=True)
class TlsKafka:
    """The TLS broker: its address, users and listener (protocol and certificates)."""

    bootstrap: str
    credentials: Credentials
    listener: Listener

    def options(self, user: str) -> dict[str, Any]:
        """aiokafka keyword arguments for ``user`` (a role, or the super user)."""
        return client_options(user, self.credentials.password(user), self.listener)

    def env(self, role: str) -> dict[str, str]:
        """The ``SLUICEGATE_KAFKA_*`` lines ``kafka start --secure`` prints for ``role``."""
        lines = settings_lines(role, self.bootstrap, self.credentials, self.listener)
        return dict(line.split("=", 1) for line in lines)

    def settings(self, role: str, **values: Any) -> Settings:
        """Settings with ``role``'s access, as its process reads them from its environment."""
        kafka = {name.removeprefix("SLUICEGATE_").lower(): value for name, value in self.env(role).items()}
        return Settings(**{**kafka, **values})

    async def deployment(self, prefix: str, partitions: int = 3) -> WorkerTopics:
        """The ACL matrix of ``prefix`` applied and its topics created (as a worker does at start)."""
        topics = WorkerTopics(TopicNames(prefix), partitions)
        admin = self.options(ADMIN)
        await apply(self.bootstrap, matrix(prefix), admin)
        await ensure_topics(self.bootstrap, topics.specs(), options=admin)
        return topics


@contextmanager
def tls_broker(data_dir: Path, protocol: str) -> Iterator[TlsKafka]:
    """A secure broker whose client listener speaks ``protocol`` (SASL_SSL or SSL), stopped afterwards."""
    settings = Settings()
    config = BrokerConfig(port=free_port(), data_dir=data_dir, version=settings.kafka_version,
                          cache_dir=settings.artifact_cache_dir.resolve(), secure=True, protocol=protocol)
    status, _ = start_broker(config)
    credentials = Credentials.load(config.data_dir)
    assert credentials is not None
    try:
        yield TlsKafka(status.bootstrap_servers, credentials, listener_of(config.data_dir))
    finally:
        stop_broker(config.data_dir)


async def produce(bootstrap: str, options: dict[str, Any], topic: str) -> None:
    """One record to ``topic`` with these client options; raises what the broker (or TLS) answers."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **options)
    try:
        await asyncio.wait_for(producer.start(), 60)
        await asyncio.wait_for(producer.send_and_wait(topic, b"{}", key=b"k"), 30)
    finally:
        await producer.stop()
