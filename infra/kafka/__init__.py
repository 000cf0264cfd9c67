"""The local Apache Kafka broker: fetch its jars with Maven, format KRaft storage, start, probe, stop."""

from infra.kafka.artifacts import cached_libs, ensure_artifacts
from infra.kafka.launcher import (
    BrokerConfig,
    BrokerStatus,
    StartResult,
    broker_status,
    start_broker,
    stop_broker,
)
from infra.kafka.process import LauncherError

__all__ = [
    "BrokerConfig",
    "BrokerStatus",
    "LauncherError",
    "StartResult",
    "broker_status",
    "cached_libs",
    "ensure_artifacts",
    "start_broker",
    "stop_broker",
]
