"""Replies against fleet size: decisions an agent process reads per decision it needs, today (the decisions
topic's partitions of its agents) and with reply partitions (docs/replies.md), over a real broker.

A fleet of N simulated agents (1,000, 10,000 and 100,000) is grouped into processes of
``--agents-per-process`` agents each (50: an agent runtime serving 50 agent sessions, or one gateway
per host; agent ids are contiguous per process, so a process's agents hash to unrelated partitions as
real ids do). Each agent gets one decision.

- today: the decisions are produced the way the worker sends them (``publish_sends``, keyed by agent
  id) to a decisions topic of ``--decision-partitions`` partitions; a process reads every partition its
  agents hash to, from where it stood before publishing.
- replies: the processes lease partitions of a replies topic of ``ceil(processes / sharing)``
  partitions (the sizing rule) through a real lease topic, in rounds as concurrent claimants would (all
  claims of a round written, the log read back, the losers withdraw and retry;
  :class:`sluicegate.replies.LeaseBook` decides, as in each SDK); the decisions are produced as the
  worker sends them for intents naming each process's reply key, and a process reads its partition.

Records are counted as a consumer reads them back from the broker (real records and offsets, every
partition read once; a process's reads are the records on the partitions it reads). Reports per size
the max and mean of reads per needed decision over all processes, and the records the brokers send to
agent processes per decision (today also for processes of one agent each, from the same records);
``reads_per_needed_max`` is the replies path's max over all sizes (goal <= 2),
``reads_per_needed_max_today`` today's. ``--plots DIR`` also runs ``bench/cost_curves.py`` (evaluation
time, state and latency curves, PNGs in DIR) and merges its figures.

    python bench/scale.py --json
    python bench/scale.py --json --plots docs/img --quick
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import secrets
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.broker import main as bench_main  # noqa: E402
from infra.kafka.admin import TopicSpec, ensure_topics  # noqa: E402
from schemas import Decision, DecisionKind, Intent, TopicNames  # noqa: E402
from sluicegate.replies import LeaseBook, ReplyLeaseClaim, lease_key, reply_key_for  # noqa: E402
from sluicegate.routing import partition_for  # noqa: E402
from streams.stages.outputs import Route, publish_sends  # noqa: E402
from streams.topology import APPEND_TIME, COMPACTED  # noqa: E402

SIZES = (1_000, 10_000, 100_000)
AGENTS_PER_PROCESS = 50
SHARING = 2
DECISION_PARTITIONS = 6
LEASE_TTL_MS = 600_000
MAX_LEASE_ROUNDS = 64


@dataclass(frozen=True, slots=True)
class Fleet:
    """N agents in processes of ``per_process`` (agent i is in process i // per_process)."""

    agents: int
    per_process: int

    @property
    def processes(self) -> int:
        return math.ceil(self.agents / self.per_process)

    def agent(self, i: int) -> str:
        return f"agent-{i:06d}"

    def members(self, process: int) -> range:
        return range(process * self.per_process, min(self.agents, (process + 1) * self.per_process))


def reply_partitions_for(processes: int, sharing: int) -> int:
    """The sizing rule: enough partitions that each is leased by at most ``sharing`` processes."""
    return max(1, math.ceil(processes / sharing))


def reads_per_needed(reads: Sequence[int], needed: Sequence[int]) -> dict[str, float]:
    """Max and mean over processes of records read per record needed, and the records sent to agent
    processes per decision (all of them)."""
    ratios = [r / n for r, n in zip(reads, needed, strict=True) if n]
    return {"reads_per_needed_max": round(max(ratios), 3),
            "reads_per_needed_mean": round(statistics.fmean(ratios), 3),
            "records_to_agents_per_decision": round(sum(reads) / sum(needed), 3)}


def today_reads(fleet: Fleet, per_partition: Counter[int], partitions: int) -> list[int]:
    """Records each process reads today: everything on the decision partitions its agents hash to."""
    return [sum(per_partition[p] for p in {partition_for(fleet.agent(i), partitions)
                                           for i in fleet.members(k)})
            for k in range(fleet.processes)]


def decision_for(intent: Intent) -> Decision:
    return Decision(request_id=intent.request_id, agent_id=intent.agent_id, decision=DecisionKind.ALLOW,
                    reasons=("refund up to 100",), rules=("refund-up-to-100",),
                    determining=("refund-up-to-100",),
                    policy_version="0" * 16, policy_name="scale", decided_at=datetime.now(UTC),
                    intent_digest=intent.digest())


def intent_for(agent: str) -> Intent:
    return Intent(request_id=uuid.uuid4(), agent_id=agent, agent_role="support", environment="production",
                  tool="payments.refund", action="create", target="payments:refunds", params={"amount": 10},
                  occurred_at=datetime.now(UTC))


class Broker:
    """One producer and one reading consumer on the broker under test."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                         max_batch_size=256 * 1024)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                         max_partition_fetch_bytes=4 * 1024 * 1024)

    async def __aenter__(self) -> Broker:
        await self.producer.start()
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.producer.stop()

    async def ends(self, topic: str, partitions: int) -> dict[TopicPartition, int]:
        return dict(await self.consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)]))

    async def send_all(self, records: Iterable[tuple[str, bytes, bytes | None, int | None]]) -> None:
        """Produce (topic, key, value, partition) records, a partition of None placed by the producer's
        default partitioner (the worker's); one batch per partition at a time, as a busy producer sends."""
        by_partition: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = defaultdict(list)
        for topic, key, value, partition in records:
            if partition is None:
                every = sorted(await self.producer.partitions_for(topic))
                partition = DefaultPartitioner()(key, every, every)
            by_partition[(topic, partition)].append((key, value))
        futures = []
        for (topic, partition), items in by_partition.items():
            batch = self.producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:  # full
                    futures.append(await self.producer.send_batch(batch, topic, partition=partition))
                    batch = self.producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)

    async def read(self, since: dict[TopicPartition, int]) -> list[Any]:
        """Every record from ``since`` to the current end of those partitions."""
        ends = await self.consumer.end_offsets(list(since))
        self.consumer.assign(list(since))
        for tp, offset in since.items():
            self.consumer.seek(tp, offset)
        records: list[Any] = []
        left = {tp for tp in since if ends[tp] > since[tp]}
        while left:
            for tp, batch in (await self.consumer.getmany(timeout_ms=1000, max_records=20_000)).items():
                records += batch
                if batch and batch[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
        return records


async def lease_all(broker: Broker, topic: str, processes: int, partitions: int, sharing: int,
                    rng: random.Random) -> tuple[dict[int, int], dict[str, int]]:
    """The partition each process leased (by the lease protocol; a process left without one is
    missing), and how the claiming went."""
    book = LeaseBook(partitions, sharing)
    holder = {k: f"p{k:06d}-{secrets.token_hex(3)}" for k in range(processes)}
    since = {TopicPartition(topic, 0): 0}
    leased: dict[int, int] = {}
    waiting = list(range(processes))
    rounds = claims = 0
    while waiting and rounds < MAX_LEASE_ROUNDS:
        rounds += 1
        now_ms = time.time_ns() // 1_000_000
        picks = {k: book.pick(now_ms, rng) for k in waiting}
        tries = {k: p for k, p in picks.items() if p is not None}
        if not tries:
            break
        claims += len(tries)
        await broker.send_all((topic, lease_key(p, holder[k]), claim_of(p, holder[k]), 0)
                              for k, p in tries.items())
        stamp = await fold(broker, book, since)
        lost = []
        for k, p in tries.items():
            if book.holds(p, holder[k], stamp[holder[k]]):
                leased[k] = p
            else:
                lost.append((topic, lease_key(p, holder[k]), None, 0))
        await broker.send_all(lost)
        await fold(broker, book, since)
        waiting = [k for k in waiting if k not in leased]
    figures = {"lease_rounds": rounds, "lease_claims_written": claims, "unleased_processes": len(waiting)}
    return leased, figures


def claim_of(partition: int, holder: str) -> bytes:
    return ReplyLeaseClaim(partition=partition, holder=holder, ttl_ms=LEASE_TTL_MS).model_dump_json().encode()


async def fold(broker: Broker, book: LeaseBook, since: dict[TopicPartition, int]) -> dict[str, int]:
    """Apply the lease log from ``since`` on (moved forward); the broker time of each holder's last claim."""
    stamps: dict[str, int] = {}
    for record in await broker.read(since):
        book.apply(record.offset, record.timestamp, record.key, record.value)
        since[TopicPartition(record.topic, record.partition)] = record.offset + 1
        if record.value is not None:
            stamps[record.key.decode().partition("/")[2]] = record.timestamp
    return stamps


async def decisions_per_partition(broker: Broker, topic: str, partitions: int,
                                  sends: Iterable[tuple[bytes, bytes]]) -> Counter[int]:
    """Produce ``(key, value)`` decisions to ``topic`` (default partitioner) and count, as read back,
    the records on each partition since before the first was produced."""
    since = await broker.ends(topic, partitions)
    await broker.send_all((topic, key, value, None) for key, value in sends)
    return Counter(record.partition for record in await broker.read(since))


def topics_of(prefix: str, fleet: Fleet, args: argparse.Namespace) -> list[TopicSpec]:
    """A fleet size's decisions, replies and lease topics."""
    names = TopicNames(f"{prefix}-{fleet.agents}")
    return [TopicSpec(names.decisions, args.decision_partitions),
            TopicSpec(names.replies, reply_partitions_for(fleet.processes, args.sharing)),
            TopicSpec(names.reply_leases, 1, configs={**COMPACTED, **APPEND_TIME})]


async def measure(broker: Broker, prefix: str, fleet: Fleet, args: argparse.Namespace,
                  rng: random.Random) -> dict[str, Any]:
    names = TopicNames(f"{prefix}-{fleet.agents}")
    reply_partitions = reply_partitions_for(fleet.processes, args.sharing)
    started = time.perf_counter()
    intents = [intent_for(fleet.agent(i)) for i in range(fleet.agents)]
    needed = [len(fleet.members(k)) for k in range(fleet.processes)]

    today = [publish_sends(intent, decision_for(intent))[0] for intent in intents]
    assert {send.route for send in today} == {Route.DECISIONS}
    counts = await decisions_per_partition(broker, names.decisions, args.decision_partitions,
                                           ((s.key, s.value) for s in today))
    today_figures = reads_per_needed(today_reads(fleet, counts, args.decision_partitions), needed)
    alone = Fleet(fleet.agents, 1)  # the same decisions, each agent in a process of its own
    today_alone = reads_per_needed(today_reads(alone, counts, args.decision_partitions), [1] * fleet.agents)

    leased, lease_figures = await lease_all(broker, names.reply_leases, fleet.processes, reply_partitions,
                                            args.sharing, rng)
    keys = {p: reply_key_for(p, reply_partitions) for p in set(leased.values())}
    routed = []
    for i, intent in enumerate(intents):
        process = i // fleet.per_process
        key = keys[leased[process]] if process in leased else None
        send = publish_sends(intent.model_copy(update={"reply_key": key}), decision_for(intent))[0]
        routed.append(send)
    replies = [s for s in routed if s.route is Route.REPLIES]
    reply_counts = await decisions_per_partition(broker, names.replies, reply_partitions,
                                                 ((s.key, s.value) for s in replies))
    unleased_reads = today_reads(fleet, counts, args.decision_partitions)  # no lease: today's path
    reads = [reply_counts[leased[k]] if k in leased else unleased_reads[k] for k in range(fleet.processes)]
    return {
        "agents": fleet.agents, "processes": fleet.processes, "decisions": fleet.agents,
        "decision_partitions": args.decision_partitions, "reply_partitions": reply_partitions,
        "today": today_figures, "today_one_agent_per_process": today_alone,
        "replies": {**reads_per_needed(reads, needed), **lease_figures},
        "seconds": round(time.perf_counter() - started, 1),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="fleet sizes (agents), comma-separated")
    parser.add_argument("--agents-per-process", type=int, default=AGENTS_PER_PROCESS)
    parser.add_argument("--sharing", type=int, default=SHARING, help="processes per reply partition")
    parser.add_argument("--decision-partitions", type=int, default=DECISION_PARTITIONS)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--plots", type=Path, default=None,
                        help="also run bench/cost_curves.py, PNGs into this directory, figures merged")
    parser.add_argument("--quick", action="store_true", help="with --plots: the cost curves' smoke sizes")


async def run(args: argparse.Namespace, bootstrap: str, workdir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    prefix = "scale" + secrets.token_hex(4)
    fleets = [Fleet(int(size), args.agents_per_process) for size in args.sizes.split(",")]
    # all topics first: a topic of a thousand partitions takes the broker a while to lead them all,
    # which then overlaps the smaller sizes' runs instead of stalling the producer
    await ensure_topics(bootstrap, [spec for fleet in fleets for spec in topics_of(prefix, fleet, args)])
    sizes = []
    async with Broker(bootstrap) as broker:
        for fleet in fleets:
            sizes.append(await measure(broker, prefix, fleet, args, rng))
    result: dict[str, Any] = {
        "grouping": f"{args.agents_per_process} agents per process (contiguous ids), one decision per agent",
        "sharing": args.sharing, "sizes": sizes,
        "reads_per_needed_max": max(s["replies"]["reads_per_needed_max"] for s in sizes),
        "reads_per_needed_max_today": max(s["today"]["reads_per_needed_max"] for s in sizes),
    }
    if args.plots is not None:
        from bench import cost_curves  # lazily: the curves are their own benchmark

        # it runs its own event loops (and broker): on a thread of its own, outside this one's
        result.update(await asyncio.to_thread(cost_curves.run, args.plots, args.quick))
    return result


def main() -> None:
    bench_main(__doc__ or "", add_arguments, run)


if __name__ == "__main__":
    main()
