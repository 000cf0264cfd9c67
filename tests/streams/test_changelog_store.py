"""A deciding stage's table: per-partition rocksdict with a changelog, restored from a real broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra.kafka.admin import TopicSpec, ensure_topics
from sluicegate.trust import KeyRing
from streams.state.changelog_seal import ChangelogSeal
from streams.state.changelog_store import CHECKPOINT_KEY, ChangelogStore


def test_writes_and_deletes_are_queued_for_the_changelog_in_order(tmp_path: Path) -> None:
    store = ChangelogStore(tmp_path, "cl")
    store.open(0)
    store.open(3)
    store.use(3)
    store["w|a"] = b"1"
    store.use(0)
    store["w|a"] = b"2"
    assert store.pop("w|a", None) == b"2"
    assert store.pop("w|missing", None) is None
    assert store.take_writes() == [(3, b"w|a", b"1"), (0, b"w|a", b"2"), (0, b"w|a", None)]
    assert store.take_writes() == []
    store.use(3)
    assert store.get("w|a") == b"1" and "w|a" in store


def test_the_checkpoint_is_not_a_table_key_and_survives_reopening(tmp_path: Path) -> None:
    store = ChangelogStore(tmp_path, "cl")
    store.open(1)
    store.use(1)
    store["d|x"] = b"record"
    store.checkpoint(1, 41)
    store["w|y"] = b"window"
    store["d|z"] = b"record"
    assert list(store) == ["d|x", "d|z", "w|y"] and len(store) == 3
    assert list(store.keys_with_prefix("d|")) == ["d|x", "d|z"]
    store.close_all()
    again = ChangelogStore(tmp_path, "cl")
    assert again.checkpointed(1) == 41
    again.use(1)
    assert again["d|x"] == b"record"
    again.discard(1)
    assert again.checkpointed(1) is None


def test_writes_reach_the_database_only_with_their_checkpoint(tmp_path: Path) -> None:
    """A crash at any point leaves the database exactly at its last checkpoint, never ahead of the
    changelog: writes are held (and read through) until the checkpoint that follows the flush."""
    store = ChangelogStore(tmp_path, "cl")
    store.open(0)
    store.use(0)
    store["w|a"] = b"1"
    store["w|b"] = b"2"
    store.checkpoint(0, 7)
    store["w|a"] = b"changed"
    del store["w|b"]
    store["w|c"] = b"new"
    assert dict(store.items()) == {"w|a": b"changed", "w|c": b"new"} and "w|b" not in store
    assert [bytes(k) for k in store.dbs[0].keys() if k != CHECKPOINT_KEY] == [b"w|a", b"w|b"]  # noqa: SIM118
    store.dbs[0].close()  # the process dies before the next checkpoint
    crashed = ChangelogStore(tmp_path, "cl")
    crashed.open(0)
    crashed.use(0)
    assert dict(crashed.items()) == {"w|a": b"1", "w|b": b"2"} and crashed.checkpointed(0) == 7
    crashed["w|a"] = b"changed"
    del crashed["w|b"]
    crashed.checkpoint(0, 9)
    crashed.close_all()
    again = ChangelogStore(tmp_path, "cl")
    again.open(0)
    again.use(0)
    assert dict(again.items()) == {"w|a": b"changed"} and again.checkpointed(0) == 9


def test_no_partition_in_use_is_an_error_not_a_silent_write(tmp_path: Path) -> None:
    store = ChangelogStore(tmp_path, "cl")
    with pytest.raises(RuntimeError, match="no partition in use"):
        store["w|a"] = b"1"
    store.open(0)
    store.use(0)
    store.close(0)
    with pytest.raises(RuntimeError):
        store.get("w|a")


async def _produce(bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition, key, value in records:
            await producer.send(topic, value, key=key, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


async def test_restore_applies_the_changelog_then_only_what_came_after_the_checkpoint(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path,
) -> None:
    topic = f"{unique_name}-agent-state-changelog"
    await ensure_topics(kafka_bootstrap, [TopicSpec(topic, 2, configs={"cleanup.policy": "compact"})])
    await _produce(kafka_bootstrap, topic, [
        (0, b"w|a", b"1"), (0, b"w|b", b"2"), (0, b"w|a", b"3"), (0, b"w|b", None), (1, b"h|c", b"9"),
    ])
    restorer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="none")
    await restorer.start()
    try:
        store = ChangelogStore(tmp_path, topic)
        assert await store.restore(restorer, [0, 1]) == 5
        store.use(0)
        assert dict(store.items()) == {"w|a": b"3"}
        store.use(1)
        assert dict(store.items()) == {"h|c": b"9"}
        assert (store.checkpointed(0), store.checkpointed(1)) == (3, 0)

        # Another worker owned partition 0 for a while; this one takes it back from its checkpoint.
        await _produce(kafka_bootstrap, topic, [(0, b"w|a", b"4"), (0, b"d|r", b"rec")])
        store.close_all()
        again = ChangelogStore(tmp_path, topic)
        assert await again.restore(restorer, [0, 1]) == 2
        again.use(0)
        assert dict(again.items()) == {"w|a": b"4", "d|r": b"rec"}
        assert again.checkpointed(0) == 5
        assert await again.restore(restorer, [0]) == 0
        assert await again.restore(restorer, []) == 0

        # A checkpoint past the changelog's end: the topic was recreated under the database.
        again.checkpoint(1, 99)
        again.use(1)
        again["w|stale"] = b"from another life"
        assert await again.restore(restorer, [1]) == 1
        again.use(1)
        assert dict(again.items()) == {"h|c": b"9"}
        assert again.checkpointed(1) == 0

        # A checkpoint older than Kafka keeps tombstones: not trusted, the partition is rebuilt.
        again.open(0)[CHECKPOINT_KEY] = b"5:0"
        assert again.checkpointed(0) is None
        again.use(0)
        again["w|gone"] = b"deleted since"
        assert await again.restore(restorer, [0]) == 6
        again.use(0)
        assert dict(again.items()) == {"w|a": b"4", "d|r": b"rec"}
    finally:
        await restorer.stop()


async def test_with_trust_on_restore_skips_what_no_worker_sealed(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path,
) -> None:
    """A record planted on the changelog (unsealed, sealed with another ring, moved from another
    partition or topic, or a forged delete) does not replace the genuine state before it."""
    topic = f"{unique_name}-approval-state-changelog"
    await ensure_topics(kafka_bootstrap, [TopicSpec(topic, 2, configs={"cleanup.policy": "compact"})])
    ring = KeyRing.generate()
    writer = ChangelogStore(tmp_path / "writer", topic, ChangelogSeal(ring))
    writer.open(0)
    writer.use(0)
    writer["a|r1"] = b"open"
    writer["w|x"] = b"window"
    genuine = [(p, k, v, writer.headers(p, k, v)) for p, k, v in writer.take_writes()]
    moved = writer.headers(1, b"a|r1", b"approved")  # sealed for partition 1, replayed on 0
    other_topic = ChangelogSeal(ring).headers(topic + "-x", 0, b"a|r1", b"approved")
    stranger = ChangelogSeal(KeyRing.generate()).headers(topic, 0, b"a|r1", b"approved")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for partition, key, value, headers in genuine:
            await producer.send(topic, value, key=key, partition=partition, headers=headers)
        for headers in (None, moved, other_topic, stranger):
            await producer.send(topic, b"approved", key=b"a|r1", partition=0, headers=headers)
        await producer.send(topic, None, key=b"w|x", partition=0)  # a forged delete
        await producer.flush()
    finally:
        await producer.stop()
    restorer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="none")
    await restorer.start()
    try:
        store = ChangelogStore(tmp_path / "reader", topic, ChangelogSeal(ring.rotated()))
        assert await store.restore(restorer, [0]) == 2
        store.use(0)
        assert dict(store.items()) == {"a|r1": b"open", "w|x": b"window"}
        assert store.refused == 5
        # Sealed under the ring's older key: rewritten under the current one, so it can be retired.
        assert store.take_writes() == [(0, b"a|r1", b"open"), (0, b"w|x", b"window")]
        assert store.headers(0, b"a|r1", b"open") != genuine[0][3]
        unsealed = ChangelogStore(tmp_path / "trust-off", topic)  # what a worker without trust sees
        assert await unsealed.restore(restorer, [0]) == 7
        unsealed.use(0)
        assert dict(unsealed.items()) == {"a|r1": b"approved"}
    finally:
        await restorer.stop()
