"""Partition routing (checked against aiokafka's partitioner) and the reply demultiplexer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from schemas import Decision, DecisionKind
from sluicegate.routing import BadReply, ReplyDemux, murmur2, partition_for

# Kafka's own test vectors for Utils.murmur2 (signed Java ints).
KAFKA_VECTORS = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize(("text", "expected"), KAFKA_VECTORS.items())
def test_murmur2_matches_kafka_vectors(text: str, expected: int) -> None:
    assert murmur2(text.encode()) == expected & 0xFFFFFFFF


@given(key=st.binary(max_size=64), partitions=st.integers(min_value=1, max_value=512))
def test_partition_matches_aiokafka_default_partitioner(key: bytes, partitions: int) -> None:
    all_partitions = list(range(partitions))
    assert partition_for(key, partitions) == DefaultPartitioner()(key, all_partitions, all_partitions)


@given(agent=st.text(min_size=1, max_size=40), partitions=st.integers(min_value=1, max_value=64))
def test_partition_of_an_agent_id_is_that_of_its_utf8_key(agent: str, partitions: int) -> None:
    all_partitions = list(range(partitions))
    expected = DefaultPartitioner()(agent.encode(), all_partitions, all_partitions)
    assert partition_for(agent, partitions) == expected


def test_partition_count_must_be_positive() -> None:
    with pytest.raises(ValueError):
        partition_for("a", 0)


def _decision(request_id: object, agent_id: str = "a1") -> bytes:
    return Decision.model_validate(
        {"request_id": request_id, "agent_id": agent_id, "decision": DecisionKind.ALLOW,
         "decided_at": datetime.now(UTC)}
    ).model_dump_json().encode()


async def test_demux_routes_by_request_id_and_skips_others() -> None:
    demux = ReplyDemux()
    mine, theirs = uuid4(), uuid4()
    waiter = demux.register(mine, "a1")
    demux.feed(2, b"a9", _decision(theirs, "a9"))
    demux.feed(2, b"a1", _decision(mine))
    decision = await asyncio.wait_for(waiter.next(), 1)
    assert decision.request_id == mine
    assert demux.stats.delivered == 1 and demux.stats.skipped == 1
    assert demux.stats.records[2] == 2


async def test_demux_reports_unparseable_reply_to_its_waiter() -> None:
    demux = ReplyDemux()
    rid = uuid4()
    waiter = demux.register(rid, "a1")
    demux.feed(0, b"a1", f'{{"request_id": "{rid}", "decision": "MAYBE"}}'.encode())
    with pytest.raises(BadReply, match="unparseable decision"):
        await asyncio.wait_for(waiter.next(), 1)


async def test_demux_drops_garbage_without_request_id() -> None:
    demux = ReplyDemux()
    demux.register(uuid4(), "a1")
    demux.feed(0, b"a1", b"\xff not json")
    demux.feed(0, None, None)
    assert demux.stats.unusable == 2 and demux.stats.delivered == 0


async def test_demux_refuses_a_decision_naming_another_agent() -> None:
    demux = ReplyDemux()
    rid = uuid4()
    waiter = demux.register(rid, "a1")
    demux.feed(0, b"a1", _decision(rid, agent_id="intruder"))
    with pytest.raises(BadReply, match="intruder"):
        await asyncio.wait_for(waiter.next(), 1)


async def test_demux_refuses_double_registration_and_forgets() -> None:
    demux = ReplyDemux()
    rid = uuid4()
    demux.register(rid, "a1")
    with pytest.raises(ValueError):
        demux.register(rid, "a1")
    demux.unregister(rid)
    assert len(demux) == 0
