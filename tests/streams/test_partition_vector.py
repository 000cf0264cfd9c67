"""The README's test vector for producers in other languages: where Kafka's default partitioner puts a
key, which is where a worker expects that agent's intents."""

from __future__ import annotations

import pytest

from sluicegate.routing import partition_for


@pytest.mark.parametrize(("key", "partitions", "expected"), [
    ("support-7", 6, 4), ("support-7", 12, 10), ("agent-001", 6, 5), ("agent-001", 12, 11),
])
def test_the_readme_vector(key: str, partitions: int, expected: int) -> None:
    assert partition_for(key, partitions) == expected
