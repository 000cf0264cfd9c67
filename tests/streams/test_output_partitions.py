"""The runner picks each output's partition itself (its key's murmur2 remembered): the same partition
aiokafka's default partitioner picks, for every kind of key the worker sends."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams.runtime.runner import _partition_of

KEYS = [b"", b"a", b"agent-001", b"support-7", "agent-é".encode(), b"bench1a2b-agent-state/0/1796348485816",
        *(str(uuid.UUID(int=n * 7919)).encode() for n in range(50)),
        *(f"agent-{n:05d}".encode() for n in range(200))]


@pytest.mark.parametrize("count", [1, 3, 6, 12, 64])
def test_the_partition_is_the_default_partitioners(count: int) -> None:
    partitions = set(range(count))
    default = DefaultPartitioner()
    for key in KEYS:
        for _ in range(2):  # computed, then remembered
            assert _partition_of(key, partitions) == default(key, list(partitions), list(partitions))
