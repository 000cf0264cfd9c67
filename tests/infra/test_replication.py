"""Replication settings: every topic the worker creates carries them, and a worker refuses to start on
existing topics with fewer replicas than configured (naming the topic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.kafka.admin import MIN_INSYNC_REPLICAS, TopicSpec, ensure_topics
from schemas import TopicNames
from streams.app import WorkerConfig
from streams.topology import WorkerTopics
from streams.worker import prepare_topics


def test_every_topic_carries_the_replication_factor_and_min_insync_replicas() -> None:
    specs = WorkerTopics(TopicNames("p"), 6, replication_factor=3, min_insync_replicas=2).specs()
    assert {spec.replication_factor for spec in specs} == {3}
    assert {spec.configs[MIN_INSYNC_REPLICAS] for spec in specs} == {"2"}
    intents = next(spec for spec in specs if spec.name == "p.intents")
    assert intents.configs["message.timestamp.type"] == "LogAppendTime"  # its own configs are kept


@pytest.mark.integration
async def test_the_worker_refuses_an_existing_topic_with_fewer_replicas_than_configured(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path,
) -> None:
    names = TopicNames(unique_name)
    await ensure_topics(kafka_bootstrap, [TopicSpec(names.decisions, 2, 1)])
    config = WorkerConfig(bootstrap=kafka_bootstrap, topic_prefix=unique_name, partitions=2, workdir=tmp_path,
                          trust_off=True, replication_factor=3, min_insync_replicas=2)
    topics = WorkerTopics(names, 2, config.replication_factor, config.min_insync_replicas)
    with pytest.raises(SystemExit, match=f"{names.decisions} has replication factor 1, not 3"):
        await prepare_topics(config, topics)


@pytest.mark.integration
async def test_a_worker_accepts_the_topics_it_created_on_restart(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path,
) -> None:
    config = WorkerConfig(bootstrap=kafka_bootstrap, topic_prefix=unique_name, partitions=2, workdir=tmp_path,
                          trust_off=True)
    topics = WorkerTopics(TopicNames(unique_name), 2, 1, 1)
    await prepare_topics(config, topics)
    await prepare_topics(config, topics)  # a restart finds them as they should be
