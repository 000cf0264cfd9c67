"""A secure local broker (``sluicegate kafka start --secure``) for the session: SASL/SCRAM, the standard
authorizer, one user per role; each test applies the ACL matrix of its own topic prefix."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.kafka import BrokerConfig, start_broker, stop_broker
from infra.kafka.acls import apply, matrix
from infra.kafka.admin import ensure_topics
from infra.kafka.process import free_port
from infra.kafka.secure import ADMIN, Credentials, client_options, settings_lines
from schemas import TopicNames
from sluicegate.settings import Settings
from streams.topology import WorkerTopics
from tests.approvals.conftest import fake_slack, users_file


@dataclass(frozen=True)
class SecureKafka:
    """The secure broker: its address and its users."""

    bootstrap: str
    credentials: Credentials
    data_dir: Path

    def options(self, user: str) -> dict[str, Any]:
        """aiokafka keyword arguments for ``user`` (a role, or the super user)."""
        return client_options(user, self.credentials.password(user))

    def env(self, role: str) -> dict[str, str]:
        """The ``SLUICEGATE_KAFKA_*`` settings ``sluicegate kafka start --secure`` prints for ``role``."""
        return dict(line.split("=", 1) for line in settings_lines(role, self.bootstrap, self.credentials))

    def settings(self, role: str, **values: Any) -> Settings:
        """Settings with ``role``'s access (as its process would read them from its environment)."""
        kafka = {name.removeprefix("SLUICEGATE_").lower(): value for name, value in self.env(role).items()}
        return Settings(**kafka, **values)


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    settings = Settings()
    config = BrokerConfig(port=free_port(), data_dir=tmp_path_factory.mktemp("secure-kafka"),
                          cache_dir=settings.artifact_cache_dir.resolve(), version=settings.kafka_version,
                          secure=True)
    status, _ = start_broker(config)
    credentials = Credentials.load(config.data_dir)
    assert credentials is not None
    try:
        yield SecureKafka(status.bootstrap_servers, credentials, config.data_dir)
    finally:
        stop_broker(config.data_dir)


@pytest.fixture
async def secured(secure_kafka: SecureKafka, unique_name: str) -> WorkerTopics:
    """A deployment on the secure broker: its ACL matrix applied and its topics created (as the worker
    does at start), with 3 partitions."""
    topics = WorkerTopics(TopicNames(unique_name), 3)
    admin = secure_kafka.options(ADMIN)
    await apply(secure_kafka.bootstrap, matrix(unique_name), admin)
    await ensure_topics(secure_kafka.bootstrap, topics.specs(), options=admin)
    return topics


__all__ = ["fake_slack", "users_file"]  # the approval tests' fake Slack Web API and its users, used here too
