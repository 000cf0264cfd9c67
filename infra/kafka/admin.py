"""Create Kafka topics idempotently (with per-topic configs) through aiokafka's admin client."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

TOPIC_ALREADY_EXISTS = 36


class TopicError(Exception):
    """The broker refused to create a topic."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic to exist: name, partitions, replication factor and topic-level configs."""

    name: str
    partitions: int = 1
    replication_factor: int = 1
    configs: Mapping[str, str] = field(default_factory=dict)


async def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], *, timeout_ms: int = 30_000) -> list[str]:
    """Create the topics of ``specs`` that do not exist yet; return the names this call created.

    Existing topics are left as they are (their partitions and configs are not changed).
    """
    wanted = {spec.name: spec for spec in specs}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for name, spec in wanted.items() if name not in existing]
        if not missing:
            return []
        new_topics = [
            NewTopic(spec.name, spec.partitions, spec.replication_factor, topic_configs=dict(spec.configs))
            for spec in missing
        ]
        response = await admin.create_topics(new_topics, timeout_ms=timeout_ms)
    finally:
        await admin.close()
    created = []
    for error in response.topic_errors:
        name, code = error[0], error[1]
        message = error[2] if len(error) > 2 else None
        if code == 0:
            created.append(name)
        elif code != TOPIC_ALREADY_EXISTS:
            raise TopicError(f"could not create topic {name!r}: {message or f'error code {code}'}")
    return created


async def partition_mismatches(bootstrap: str, specs: Iterable[TopicSpec], *,
                               timeout_ms: int = 30_000) -> list[str]:
    """One line per existing topic of ``specs`` whose partition count differs from its spec's."""
    wanted = {spec.name: spec.partitions for spec in specs}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        existing = set(await admin.list_topics())  # describing a missing topic may auto-create it
        names = [name for name in wanted if name in existing]
        described = await admin.describe_topics(names) if names else []
    finally:
        await admin.close()
    return [f"{topic['topic']} has {len(topic['partitions'])} partitions, not {wanted[topic['topic']]}"
            for topic in described
            if topic["error_code"] == 0 and len(topic["partitions"]) != wanted[topic["topic"]]]
