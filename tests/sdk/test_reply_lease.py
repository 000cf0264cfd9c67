"""The lease client on the real broker: racing claimants of the last place get it once, a released place
is claimed again, and renewing keeps a lease without reading the log."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

from infra.kafka.admin import TopicSpec, ensure_topics
from sluicegate.replies import reply_key_for
from sluicegate.reply_lease import LeaseOptions, ReplyLeaser
from streams.topology import APPEND_TIME, COMPACTED

pytestmark = pytest.mark.integration


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    client = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await client.start()
    yield client
    await client.stop()


async def leasers(bootstrap: str, topic: str, producer: AIOKafkaProducer, count: int,
                  partitions: int) -> list[ReplyLeaser]:
    await ensure_topics(bootstrap, [TopicSpec(topic, 1, configs={**COMPACTED, **APPEND_TIME})])
    made = [ReplyLeaser(bootstrap, topic, partitions, producer, options=LeaseOptions(sharing=1),
                        holder=f"h{i}", rng=random.Random(i)) for i in range(count)]
    for leaser in made:
        await leaser.start()
    return made


async def test_racing_claimants_of_one_place_get_it_once_and_a_released_place_is_claimed_again(
    kafka_bootstrap: str, unique_name: str, producer: AIOKafkaProducer,
) -> None:
    first, second, third = await leasers(kafka_bootstrap, f"{unique_name}.reply-leases", producer, 3, 1)
    try:
        won = await asyncio.gather(first.acquire(), second.acquire())
        assert sorted(lease is None for lease in won) == [False, True]
        winner, loser = (first, second) if won[0] is not None else (second, first)
        assert winner.lease is not None and winner.lease.key == reply_key_for(0, 1)
        assert loser.lease is None

        await winner.stop()  # released: the place is free again
        assert await third.acquire() is not None
    finally:
        for leaser in (first, second, third):
            await leaser.stop()


async def test_renewing_keeps_the_lease_and_its_rank(
    kafka_bootstrap: str, unique_name: str, producer: AIOKafkaProducer,
) -> None:
    holder, other = await leasers(kafka_bootstrap, f"{unique_name}.reply-leases", producer, 2, 1)
    try:
        lease = await holder.acquire()
        assert lease is not None
        assert await holder.renew() == lease
        assert await other.acquire() is None  # the renewal kept the first claim's rank
    finally:
        for leaser in (holder, other):
            await leaser.stop()
