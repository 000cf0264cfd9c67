"""Where a worker's CPU goes: py-spy samples of a bench worker in bursts and at a steady rate, summed by
component of the record path (docs/performance.md, "What the worker's CPU goes to").

Drives workers with :mod:`bench.e2e`'s load (same intents, policy, partitions; trust off unless
``--trust``): per round, ``--bursts`` bursts of ``--burst-size`` intents (the worker stopped while they
are published, then drained), then ``--steady-s`` seconds at ``--rate``; py-spy (``pip install
py-spy``) records each phase (``-f raw``, 200 Hz) into ``OUT``. With ``--trees A,B`` (checkouts of two
commits, e.g. ``git worktree add``) one worker runs each tree's code and the phases alternate between
them, so the machine's load falls on both alike. Prints, per tree and phase, the CPU per intent and
the share of samples by component.

    python bench/worker_profile.py /tmp/profile
    python bench/worker_profile.py /tmp/profile --trees /tmp/before,/tmp/after --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import e2e  # noqa: E402
from bench.broker import bootstrap_servers  # noqa: E402
from sluicegate.trust import KeyRing  # noqa: E402

Stack = tuple[list[str], int]


def _has(*names: str) -> Callable[[list[str]], bool]:
    return lambda frames: any(name in frame for frame in frames for name in names)


COMPONENTS: list[tuple[str, Callable[[list[str]], bool]]] = [
    ("take-over, restore", _has("Runner._take_over", "ChangelogStore.restore")),
    ("audit chain: chaining a record (row, canonical JSON, SHA-256, outbox)", _has("AuditChain._append")),
    ("audit chain: the rest (routing, durable records out)", _has("AuditChain.", "Chained.flushed")),
    ("engine: evaluate_raw (parse, validate, admit, rules, limits, risk)", _has("evaluate_raw")),
    ("decision and audit records (publish_sends)", _has("decision_sends", "publish_sends")),
    ("decide stage: the rest (receipts, counts, metrics)", _has("DecideStage.", "DecideBinding.")),
    ("changelog records to the producer", _has("Runner._send_changelog")),
    ("outputs to the producer (partition, seal)", _has("Runner._send ", "Runner._send_outbox")),
    ("commit: flush, offsets, RocksDB checkpoint", _has("Runner._commit")),
    ("tick, fence check, the loop itself", _has("Runner.")),
    ("aiokafka sender: produce requests", _has("Sender.", "MessageAccumulator", "aiokafka/producer")),
    ("aiokafka fetcher and connection", _has("Fetcher.", "aiokafka/")),
    ("event loop: select, socket writes, callbacks", lambda frames: True),
]


def load_stacks(paths: list[Path]) -> list[Stack]:
    """py-spy raw output: one ``frame;frame;... count`` line per stack (line numbers dropped)."""
    stacks = []
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            stacks.append(([re.sub(r":\d+\)$", ")", f) for f in stack.split(";")], int(count)))
    return stacks


def shares(stacks: list[Stack]) -> dict[str, float]:
    """Percent of samples per component (the first component a stack matches)."""
    counts: collections.Counter[str] = collections.Counter()
    total = sum(count for _, count in stacks) or 1
    for frames, count in stacks:
        counts[next(name for name, matches in COMPONENTS if matches(frames))] += count
    return {name: round(100 * counts[name] / total, 1) for name, _ in COMPONENTS}


def _spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if spy is None:
        raise SystemExit("py-spy not found: pip install py-spy")
    return subprocess.Popen([spy, "record", "-p", str(pid), "-o", str(out), "-f", "raw", "-r", "200",
                             "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(2)
    spy.wait()


async def run(args: argparse.Namespace, bootstrap: str, workdir: Path) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trees = [Path(t) for t in args.trees.split(",")] if args.trees else [ROOT]
    options = argparse.Namespace(policy=args.policy, partitions=args.partitions)
    ring = KeyRing.generate() if args.trust else None
    workers = []
    for index, tree in enumerate(trees):
        e2e.ROOT = tree  # the worker runs this tree's code (its cwd), with its policies
        worker = await e2e.start_worker(options, bootstrap, workdir / str(index), f"w{index}", ring)
        workers.append((f"{index}-{tree.name}", worker))
    client = e2e.Client(bootstrap)
    await client.start([worker.names.decisions for _, worker in workers])
    cpu: dict[str, dict[str, list[float]]] = {name: {"burst": [], "steady": []} for name, _ in workers}
    try:
        for _, worker in workers:
            await client.warm(worker)
        for round_ in range(args.rounds):
            order = workers if round_ % 2 == 0 else workers[::-1]
            for name, worker in order:
                spy = _spy(worker.proc.pid, out / f"burst-{name}-{round_}.txt")
                await asyncio.sleep(0.5)
                for _ in range(args.bursts):
                    cpu[name]["burst"].append(round((await client.burst(worker, args.burst_size))[1]))
                _stop(spy)
            for name, worker in order:
                spy = _spy(worker.proc.pid, out / f"steady-{name}-{round_}.txt")
                await asyncio.sleep(0.5)
                before = worker.cpu_s()
                ids = await client.paced(worker, args.rate, args.steady_s)
                await client.wait_all(ids, 60)
                cpu[name]["steady"].append(round(1e6 * (worker.cpu_s() - before) / len(ids)))
                _stop(spy)
    finally:
        await client.stop()
        for _, worker in workers:
            worker.proc.terminate()
            worker.proc.wait()
    return {name: {phase: {"us_per_intent": cpu[name][phase],
                           "shares": shares(load_stacks(sorted(out.glob(f"{phase}-{name}-*.txt"))))}
                   for phase in ("burst", "steady")} | {"load": e2e.load()}
            for name, _ in workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="directory for py-spy's raw profiles")
    parser.add_argument("--trees", help="comma-separated checkouts, one worker each (default: this one)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--burst-size", type=int, default=3000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--steady-s", type=float, default=8.0)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--policy", default="customer_support.yaml")
    parser.add_argument("--trust", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, bootstrap_servers(None, Path(tmp)) as bootstrap:
        print(json.dumps(asyncio.run(run(args, bootstrap, Path(tmp))), indent=1))


if __name__ == "__main__":
    main()
