"""Create Kafka topics idempotently (with per-topic configs) and check existing ones, through aiokafka's
admin client with the cluster's security options (SASL, TLS)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from sluicegate.settings import PLAINTEXT, KafkaOptions

TOPIC_ALREADY_EXISTS = 36
MIN_INSYNC_REPLICAS = "min.insync.replicas"


class TopicError(Exception):
    """The broker refused to create a topic."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic to exist: name, partitions, replication factor and topic-level configs."""

    name: str
    partitions: int = 1
    replication_factor: int = 1
    configs: Mapping[str, str] = field(default_factory=dict)


@asynccontextmanager
async def admin_client(bootstrap: str, options: KafkaOptions = PLAINTEXT, *,
                       timeout_ms: int = 30_000) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client for the block."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **options)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], *, options: KafkaOptions = PLAINTEXT,
                        timeout_ms: int = 30_000) -> list[str]:
    """Create the topics of ``specs`` that do not exist yet; return the names this call created.

    Existing topics are left as they are (their partitions and configs are not changed).
    """
    wanted = {spec.name: spec for spec in specs}
    async with admin_client(bootstrap, options, timeout_ms=timeout_ms) as admin:
        existing = set(await admin.list_topics())
        missing = [spec for name, spec in wanted.items() if name not in existing]
        if not missing:
            return []
        new_topics = [
            NewTopic(spec.name, spec.partitions, spec.replication_factor, topic_configs=dict(spec.configs))
            for spec in missing
        ]
        response = await admin.create_topics(new_topics, timeout_ms=timeout_ms)
    created = []
    for error in response.topic_errors:
        name, code = error[0], error[1]
        message = error[2] if len(error) > 2 else None
        if code == 0:
            created.append(name)
        elif code != TOPIC_ALREADY_EXISTS:
            raise TopicError(f"could not create topic {name!r}: {message or f'error code {code}'}")
    return created


async def _describe(admin: AIOKafkaAdminClient, names: Iterable[str]) -> list[dict[str, Any]]:
    """The metadata of those of ``names`` that exist (describing a missing topic may auto-create it)."""
    existing = set(await admin.list_topics())
    present = [name for name in names if name in existing]
    described = await admin.describe_topics(present) if present else []
    return [topic for topic in described if topic["error_code"] == 0]


async def partition_mismatches(bootstrap: str, specs: Iterable[TopicSpec], *,
                               options: KafkaOptions = PLAINTEXT, timeout_ms: int = 30_000) -> list[str]:
    """One line per existing topic of ``specs`` whose partition count differs from its spec's."""
    wanted = {spec.name: spec.partitions for spec in specs}
    async with admin_client(bootstrap, options, timeout_ms=timeout_ms) as admin:
        described = await _describe(admin, wanted)
    return [f"{topic['topic']} has {len(topic['partitions'])} partitions, not {wanted[topic['topic']]}"
            for topic in described if len(topic["partitions"]) != wanted[topic["topic"]]]


async def replication_shortfalls(bootstrap: str, specs: Iterable[TopicSpec], *,
                                 options: KafkaOptions = PLAINTEXT, timeout_ms: int = 30_000) -> list[str]:
    """One line per existing topic of ``specs`` with fewer replicas than its spec asks for (the
    smallest partition counts)."""
    wanted = {spec.name: spec.replication_factor for spec in specs}
    async with admin_client(bootstrap, options, timeout_ms=timeout_ms) as admin:
        described = await _describe(admin, wanted)
    lines = []
    for topic in described:
        replicas = min((len(p["replicas"]) for p in topic["partitions"]), default=0)
        if replicas < wanted[topic["topic"]]:
            lines.append(f"{topic['topic']} has replication factor {replicas}, "
                         f"not {wanted[topic['topic']]}")
    return lines
