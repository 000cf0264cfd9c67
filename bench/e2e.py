"""End-to-end latency and throughput: intent published -> decision received, through a real worker.

Starts a worker subprocess (``python -m streams.worker``) on a fresh topic prefix with an example
policy, then, with 500 simulated agents, publishes intents at 500, 1,000 and 2,000 intents/s (each for
``--seconds``) and measures publish-to-decision latency; then publishes a burst as fast as it can to
find the most one worker sustains. The "agent" side is one aiokafka producer (acks=all, linger 0, like
the SDK) and one consumer of the decisions topic (what the SDK does, minus its per-partition reply
routing). Reports CPU (also per intent) and resident memory of the worker and of this process, and the
load average, since other processes on the machine share its cores.

Nothing is measured before the worker is warm: ready (policy loaded, partitions assigned), a first
intent round-tripped (group join, table recovery and topic metadata are behind it), then a warm-up at
500/s fully answered. Uses ``--bootstrap``, else starts a throwaway local broker.

    python bench/e2e.py --json --seconds 10
    python bench/e2e.py --json --seconds 10 --trust   # trust off, then on, in one run: their ratios
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.broker import main as bench_main  # noqa: E402
from infra.kafka.process import free_port  # noqa: E402
from schemas import TopicNames  # noqa: E402
from sluicegate.trust import AUTH_HEADER, AgentCredential, KeyRing, RequestSigner, SignerCredential  # noqa: E402
from streams.policy_source import publish_policy  # noqa: E402

AGENTS = 500
RATES = (500, 1000, 2000)
TICK_S = 0.002
WARM_S = 3.0
FIRST_DECISION_TIMEOUT_S = 120.0


@dataclass
class Tracker:
    """Send and receive times (perf_counter seconds) by request id, and when the worker decided (its
    ``decided_at``, on the same clock once converted: both processes run on this machine)."""

    sent: dict[str, float] = field(default_factory=dict)
    received: dict[str, float] = field(default_factory=dict)
    decided: dict[str, float] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    ring: KeyRing | None = None
    """With ``--trust``: the deployment's keys, from which each agent's credential is derived."""

    def intent(self, index: int) -> tuple[str, bytes, bytes, list[tuple[str, bytes]] | None]:
        """:func:`intent_bytes` and, with trust on, the headers its agent's SDK would add."""
        rid, key, value = intent_bytes(index)
        if self.ring is None:
            return rid, key, value, None
        credential = AgentCredential.issue(self.ring, key.decode(), "support", "production")
        return rid, key, value, [(AUTH_HEADER, credential.authenticate(value))]

    def latencies_ms(self, ids: list[str]) -> list[float]:
        return [(self.received[i] - self.sent[i]) * 1000 for i in ids if i in self.received]

    def split_ms(self, ids: list[str]) -> tuple[list[float], list[float]]:
        """(published -> decided by the worker, decided -> received by the agent) in ms."""
        done = [i for i in ids if i in self.received and i in self.decided]
        return ([(self.decided[i] - self.sent[i]) * 1000 for i in done],
                [(self.received[i] - self.decided[i]) * 1000 for i in done])


def intent_bytes(index: int) -> tuple[str, bytes, bytes]:
    """A customer-support intent of agent ``index % AGENTS``: request id, key, JSON value."""
    rid = str(uuid.uuid4())
    agent = f"agent-{index % AGENTS:03d}"
    tool, target, params = [
        ("crm.get_account", "crm:accounts", {}), ("tickets.create", "helpdesk:tickets", {}),
        ("payments.refund", "payments:refunds", {"amount": 20}),
    ][index % 3]
    action = "read" if tool == "crm.get_account" else "create"
    value = {
        "request_id": rid, "agent_id": agent, "agent_role": "support", "environment": "production",
        "tool": tool, "action": action, "target": target, "params": params,
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    return rid, agent.encode(), json.dumps(value).encode()


class ProcStats:
    """CPU seconds and RSS of a process from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


async def collect(consumer: AIOKafkaConsumer, tracker: Tracker) -> None:
    while True:
        batches = await consumer.getmany(timeout_ms=100)
        now = time.perf_counter()
        perf_minus_wall = now - time.time()
        for records in batches.values():
            for record in records:
                start = record.value.find(b'"request_id":"') + 14
                rid = record.value[start:start + 36].decode()
                tracker.received[rid] = now
                at = record.value.find(b'"decided_at":"') + 14
                decided = datetime.fromisoformat(record.value[at:record.value.index(b'"', at)].decode())
                tracker.decided[rid] = decided.timestamp() + perf_minus_wall
        if batches:
            tracker.arrived.set()


async def paced(producer: AIOKafkaProducer, topic: str, tracker: Tracker, rate: int, seconds: float,
                counter: list[int]) -> list[str]:
    """Publish at ``rate`` intents/s for ``seconds``; returns the request ids."""
    ids: list[str] = []
    began = time.perf_counter()
    total = int(rate * seconds)
    while len(ids) < total:
        due = min(total, int((time.perf_counter() - began) * rate) + 1)
        while len(ids) < due:
            rid, key, value, headers = tracker.intent(counter[0])
            counter[0] += 1
            tracker.sent[rid] = time.perf_counter()
            await producer.send(topic, value, key=key, headers=headers)
            ids.append(rid)
        await asyncio.sleep(TICK_S)
    return ids


async def first_decision(
    producer: AIOKafkaProducer, topic: str, tracker: Tracker, counter: list[int],
) -> float:
    """Round-trip one intent (re-sent each second until answered); its latency in ms."""
    deadline = time.monotonic() + FIRST_DECISION_TIMEOUT_S
    while time.monotonic() < deadline:
        rid, key, value, headers = tracker.intent(counter[0])
        counter[0] += 1
        tracker.sent[rid] = time.perf_counter()
        await producer.send_and_wait(topic, value, key=key, headers=headers)
        await wait_all(tracker, [rid], 1.0)
        if rid in tracker.received:
            return round((tracker.received[rid] - tracker.sent[rid]) * 1000, 1)
    raise SystemExit("no decision from the worker")


async def wait_all(tracker: Tracker, ids: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(i in tracker.received for i in ids) and time.monotonic() < deadline:
        tracker.arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tracker.arrived.wait(), 1.0)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    import urllib.request

    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit("worker exited during start")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("worker not ready")


async def run(args: argparse.Namespace, bootstrap: str, workdir: Path) -> dict[str, Any]:
    """One worker with trust off; with ``--trust``, then one with trust on, and the ratios of the two."""
    off = await run_worker(args, bootstrap, workdir / "off", None)
    if not args.trust:
        return off
    on = await run_worker(args, bootstrap, workdir / "on", KeyRing.generate())
    at_on, at_off = on["at_1000"], off["at_1000"]
    ratios = {
        "cpu_ratio_at_1000": ratio(at_on["worker_us_per_intent"], at_off["worker_us_per_intent"]),
        "cpu_ratio_burst": ratio(on["burst_worker_us_per_intent"], off["burst_worker_us_per_intent"]),
        "p50_ratio_at_1000": ratio(at_on["p50_ms"], at_off["p50_ms"]),
        "p99_ratio_at_1000": ratio(at_on["p99_ms"], at_off["p99_ms"]),
        "max_ratio": ratio(on["max_per_worker"], off["max_per_worker"]),
    }
    return {"trust_off": off, "trust_on": on, **ratios}


def ratio(on: float, off: float) -> float:
    return round(on / off, 3) if off else float("nan")


async def run_worker(
    args: argparse.Namespace, bootstrap: str, workdir: Path, ring: KeyRing | None,
) -> dict[str, Any]:
    """Start a worker on a fresh prefix (trust on with ``ring``) and measure it."""
    prefix = "bench" + secrets.token_hex(4)
    names = TopicNames(prefix)
    policy = (ROOT / "policies" / "examples" / args.policy).read_text()
    publisher = None if ring is None else SignerCredential.issue(ring, "publisher", "bench")
    await publish_policy(bootstrap, names.policies, policy, args.policy, publisher)
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "worker.log").open("wb")
    trust = {"SLUICEGATE_TRUST_OFF": "1"}
    if ring is not None:
        signer = RequestSigner.generate()
        trust = {"SLUICEGATE_TRUST_KEYS": str(ring), "SLUICEGATE_TRUST_SIGNING_KEY": str(signer)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.worker", "--bootstrap", bootstrap, "--topic-prefix", prefix,
         "--partitions", str(args.partitions), "--workdir", str(workdir / "data"), "--web-port", str(port),
         "--log-level", "warning"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, **trust})
    try:
        await wait_ready(port, proc)
        return await measure(args, bootstrap, names, ProcStats(proc.pid), ring)
    finally:
        proc.terminate()
        proc.wait(30)


async def measure(
    args: argparse.Namespace, bootstrap: str, names: TopicNames, worker: ProcStats, ring: KeyRing | None,
) -> dict[str, Any]:
    me = ProcStats(os.getpid())
    tracker = Tracker(ring=ring)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=5,
                                auto_offset_reset="latest")
    await producer.start()
    await consumer.start()
    while not consumer.partitions_for_topic(names.decisions):
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    parts = [TopicPartition(names.decisions, p) for p in consumer.partitions_for_topic(names.decisions) or ()]
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)
    task = asyncio.create_task(collect(consumer, tracker))
    counter = [0]
    result: dict[str, Any] = {"agents": AGENTS, "seconds": args.seconds, "policy": args.policy}
    try:
        result["first_decision_ms"] = await first_decision(producer, names.intents, tracker, counter)
        warm = await paced(producer, names.intents, tracker, 500, WARM_S, counter)
        await wait_all(tracker, warm, 60)
        if len(tracker.latencies_ms(warm)) < len(warm):
            raise SystemExit("worker did not answer the warm-up")
        for rate in RATES:
            cpu0, me0, t0 = worker.cpu_s(), me.cpu_s(), time.perf_counter()
            ids = await paced(producer, names.intents, tracker, rate, args.seconds, counter)
            await wait_all(tracker, ids, 60)
            elapsed = time.perf_counter() - t0
            lat = tracker.latencies_ms(ids)
            to_decided, after_decided = tracker.split_ms(ids)
            worker_cpu = worker.cpu_s() - cpu0
            result[f"at_{rate}"] = {
                "p50_ms": round(pct(lat, 0.50), 2), "p99_ms": round(pct(lat, 0.99), 2),
                "p50_to_decided_ms": round(pct(to_decided, 0.50), 2),
                "p50_decided_to_received_ms": round(pct(after_decided, 0.50), 2),
                "mean_ms": round(statistics.fmean(lat), 2) if lat else None,
                "decided": len(lat), "sent": len(ids),
                "worker_cpu_pct": round(100 * worker_cpu / elapsed, 1),
                "worker_us_per_intent": round(1e6 * worker_cpu / len(ids)),
                "sdk_cpu_pct": round(100 * (me.cpu_s() - me0) / elapsed, 1),
                "load": round(os.getloadavg()[0], 2),
            }
        result["p50_ms"] = result["at_1000"]["p50_ms"]
        result["p99_ms"] = result["at_1000"]["p99_ms"]
        result["load_before_burst"] = round(os.getloadavg()[0], 2)
        cpu0 = worker.cpu_s()
        result["max_per_worker"], result["max_while_publishing"] = await burst(
            producer, names.intents, tracker, counter, args)
        result["burst_worker_us_per_intent"] = round(1e6 * (worker.cpu_s() - cpu0) / burst_size(args))
        result["worker_rss_mb"] = round(worker.rss_mb(), 1)
        result["sdk_rss_mb"] = round(me.rss_mb(), 1)
    finally:
        task.cancel()
        await consumer.stop()
        await producer.stop()
    return result


def burst_size(args: argparse.Namespace) -> int:
    return max(5000, 3000 * int(args.seconds))


async def burst(producer: AIOKafkaProducer, topic: str, tracker: Tracker, counter: list[int],
                args: argparse.Namespace) -> tuple[int, int]:
    """Publish a backlog at once and time how fast the worker drains it (decisions per second).

    Two figures: while this process publishes too (it shares the cores with the worker), and over the
    decisions made after the last intent was acknowledged (the publisher idle, as when the agents run
    on other machines): that is ``max_per_worker``.
    """
    count = burst_size(args)
    batch = [tracker.intent(counter[0] + i) for i in range(count)]
    counter[0] += count
    ids = []
    for rid, key, value, headers in batch:
        tracker.sent[rid] = time.perf_counter()
        await producer.send(topic, value, key=key, headers=headers)
        ids.append(rid)
    await producer.flush()
    published = time.perf_counter()
    await wait_all(tracker, ids, 120)
    times = sorted(tracker.received[i] for i in ids if i in tracker.received)
    first_sent = min(tracker.sent[i] for i in ids)
    overall = int(len(times) / (times[-1] - first_sent)) if len(times) > 1 else 0
    after = [t for t in times if t > published]
    drained = int(len(after) / (after[-1] - published)) if len(after) > count // 10 else overall
    return drained, overall


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per rate")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--policy", default="customer_support.yaml")
    parser.add_argument("--trust", action="store_true",
                        help="trust on: the worker verifies every intent and authenticates its decisions")


def main() -> None:
    bench_main(__doc__ or "", arguments, run)

if __name__ == "__main__":
    main()
