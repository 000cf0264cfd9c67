"""The one-step upgrade from per-stage consumer groups, on a real broker."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from infra.kafka.admin import TopicSpec, ensure_topics
from streams.upgrade import legacy_groups, upgrade

pytestmark = pytest.mark.integration


async def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def _committed(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(group)).items()}
    finally:
        await admin.close()


async def test_a_worker_waits_for_the_upgrade_which_copies_the_per_stage_offsets(
    kafka_bootstrap: str, unique_name: str,
) -> None:
    group = f"{unique_name}-worker"
    intents, shared, approvals = (f"{unique_name}.{name}" for name in ("intents", "shared", "approvals"))
    await ensure_topics(kafka_bootstrap, [TopicSpec(t, 2) for t in (intents, shared, approvals)])
    assert await legacy_groups(kafka_bootstrap, group) == ""  # a new deployment starts at once
    await _commit(kafka_bootstrap, f"{group}-decide", {TopicPartition(intents, 0): 40,
                                                       TopicPartition(intents, 1): 7})
    await _commit(kafka_bootstrap, f"{group}-shared", {TopicPartition(shared, 1): 3})
    await _commit(kafka_bootstrap, group, {TopicPartition(approvals, 0): 5})  # faust's approvals group
    refusal = await legacy_groups(kafka_bootstrap, group)
    assert intents in refusal and shared in refusal and "sluicegate worker --upgrade" in refusal

    copied = await upgrade(kafka_bootstrap, group)
    assert copied == {TopicPartition(intents, 0): 40, TopicPartition(intents, 1): 7,
                      TopicPartition(shared, 1): 3}
    assert await _committed(kafka_bootstrap, group) == {**copied, TopicPartition(approvals, 0): 5}
    assert await legacy_groups(kafka_bootstrap, group) == ""
    assert await upgrade(kafka_bootstrap, group) == {}  # once is enough
