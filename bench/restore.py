"""A take-over's cost: how fast a worker rebuilds a deciding stage's table from its changelog.

A worker that crashed, or that takes over another worker's partitions, reads their changelog before it
decides there (the stages keep no standby copy). This fills a changelog topic with ``--records`` records
shaped like stage 1's (window states, histories, idempotency records of a few hundred bytes, keys
rewritten as agents act again), then times :meth:`ChangelogStore.restore` into empty databases, and
once more from the checkpoint it left (a clean restart: nothing to read). Uses ``--bootstrap``, else
starts a throwaway local broker.

    python bench/restore.py --json --records 300000
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.broker import main as bench_main  # noqa: E402
from infra.kafka.admin import TopicSpec, ensure_topics  # noqa: E402
from streams.state.changelog_store import ChangelogStore  # noqa: E402

AGENTS = 5_000


def record(index: int, rng: random.Random) -> tuple[bytes, bytes]:
    """One changelog record: a window (600 B), a history (120 B) or an idempotency record (900 B)."""
    agent = f"agent-{rng.randrange(AGENTS):05d}"
    kind = index % 3
    if kind == 0:
        return f"w|refunds-per-hour|{agent}".encode(), os.urandom(600)
    if kind == 1:
        return f"h|{agent}|payments.refund".encode(), os.urandom(120)
    return f"d|{secrets.token_hex(16)}".encode(), os.urandom(900)


async def fill(bootstrap: str, topic: str, partitions: int, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    rng = random.Random(7)
    try:
        for index in range(count):
            key, value = record(index, rng)
            await producer.send(topic, value, key=key, partition=index % partitions)
        await producer.flush()
    finally:
        await producer.stop()


async def run(args: argparse.Namespace, bootstrap: str, workdir: Path) -> dict[str, Any]:
    topic = f"bench{secrets.token_hex(4)}-worker-agent-state-changelog"
    await ensure_topics(bootstrap, [TopicSpec(topic, args.partitions, configs={"cleanup.policy": "compact"})])
    await fill(bootstrap, topic, args.partitions, args.records)
    restorer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await restorer.start()
    try:
        store = ChangelogStore(workdir / "store", topic)
        began = time.perf_counter()
        applied = await store.restore(restorer, list(range(args.partitions)))
        full_s = time.perf_counter() - began
        began = time.perf_counter()
        again = await store.restore(restorer, list(range(args.partitions)))
        clean_s = time.perf_counter() - began
        store.close_all()
    finally:
        await restorer.stop()
    return {"records": args.records, "applied": applied, "full_restore_s": round(full_s, 2),
            "records_per_s": int(applied / full_s), "clean_restart_s": round(clean_s, 3),
            "clean_restart_records": again, "load": round(os.getloadavg()[0], 2)}


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=6)


def main() -> None:
    bench_main(__doc__ or "", arguments, run)

if __name__ == "__main__":
    main()
