"""bench/scale.py's pure helpers: the sizing rule, the fleet's grouping, and reads per needed decision."""

from __future__ import annotations

from collections import Counter

from bench.scale import Fleet, reads_per_needed, reply_partitions_for, today_reads
from sluicegate.routing import partition_for


def test_the_sizing_rule_gives_each_partition_at_most_sharing_processes() -> None:
    assert reply_partitions_for(2000, 2) == 1000
    assert reply_partitions_for(5, 2) == 3
    assert reply_partitions_for(1, 4) == 1


def test_a_fleet_groups_contiguous_agents_into_processes() -> None:
    fleet = Fleet(agents=105, per_process=50)
    assert fleet.processes == 3
    assert list(fleet.members(2)) == list(range(100, 105))


def test_today_a_process_reads_every_partition_its_agents_hash_to_once() -> None:
    fleet = Fleet(agents=4, per_process=2)
    partitions = 3
    counts = Counter({p: 10 * (p + 1) for p in range(partitions)})
    expected = [sum(counts[p] for p in {partition_for(fleet.agent(i), partitions) for i in fleet.members(k)})
                for k in range(2)]
    assert today_reads(fleet, counts, partitions) == expected


def test_reads_per_needed_reports_max_mean_and_the_fleet_total() -> None:
    figures = reads_per_needed([4, 2, 6], [2, 2, 2])
    assert figures == {"reads_per_needed_max": 3.0, "reads_per_needed_mean": 2.0,
                       "records_to_agents_per_decision": 2.0}
