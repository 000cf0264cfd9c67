"""End-to-end latency and throughput: intent published -> decision received, through a real worker, and
the same load through plain aiokafka responders in its place (the floors), in one run.

Starts a worker subprocess (``python -m streams.worker``) on a fresh topic prefix with an example
policy (with ``--trust``, a second one with trust on), and two floors (:mod:`bench.floors`) on their own
prefixes of the same broker, with the same partitions: ``echo`` answers each intent with one
decision-shaped reply (the request/reply latency floor) and ``writes`` writes per intent the records
the worker wrote per intent in this run (decision, audit, changelog; same counts and sizes, same
producer settings and commit interval: the I/O floor for throughput). One load generator, 500
simulated agents: an aiokafka producer (acks=all, linger 0, like the SDK) and one consumer of every
decisions topic (what the SDK does, minus its per-partition reply routing).

Alternating, so the machine's load falls on all alike: each rate (500, 1,000 and 2,000 intents/s, for
``--seconds`` per responder) is cut into ``--rounds`` slices that visit the responders in turn (the
order reversed every round); then each responder drains ``--rounds`` bursts: it is stopped
(SIGSTOP), a backlog is published, it is resumed, and the decisions per second until the last one
are its ``max_per_worker``, with its CPU per intent (medians of the rounds). Reports, per responder,
p50/p99 per rate and CPU per intent, and the ratios to the floors: ``p50_ratio`` / ``p99_ratio``
(sluicegate over echo at 1,000/s), ``max_ratio`` (sluicegate's max over the writes floor's) and
``cpu_vs_io_floor``; with ``--trust`` also trust on over off. The load average is recorded with every
figure: other processes share the cores.

Nothing is measured before a responder is warm: ready, a first intent round-tripped, then a warm-up at
500/s fully answered. Uses ``--bootstrap``, else starts a throwaway local broker.

    python bench/e2e.py --json
    python bench/e2e.py --json --trust   # trust off and on alternating: their ratios
    python bench/e2e.py --json --policy fleet_budget.yaml --baseline fleet_budget_unshared.yaml
        # a fleet budget (leases: extra_hops_per_intent) against the same without it (docs/leases.md)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.broker import kafka_options  # noqa: E402
from bench.broker import main as bench_main  # noqa: E402
from bench.floors import Shape, floor_topics  # noqa: E402
from infra.kafka.admin import ensure_topics  # noqa: E402
from infra.kafka.process import free_port  # noqa: E402
from schemas import TopicNames  # noqa: E402
from sluicegate.trust import AUTH_HEADER, AgentCredential, KeyRing, RequestSigner, SignerCredential  # noqa: E402
from streams.messages import kind_of  # noqa: E402
from streams.policy_source import SHADOW, publish, publish_policy  # noqa: E402

AGENTS = 500
RATES = (500, 1000, 2000)
TICK_S = 0.002
WARM_S = 3.0
FIRST_DECISION_TIMEOUT_S = 120.0
MAX_STOPPED_S = 3.0
"""A stopped responder is resumed by then: well within the group's session timeout (6 s)."""


@dataclass
class Responder:
    """A process answering intents: a worker or a floor, on its own topic prefix."""

    name: str
    names: TopicNames
    proc: subprocess.Popen[bytes]
    log: Path
    ring: KeyRing | None = None
    """A trust-on worker's keys, from which each agent's credential is derived."""
    sent: int = 0

    def failed(self, why: str) -> SystemExit:
        """The error that ends the bench when this responder fails, with the end of its log."""
        return SystemExit(f"{self.name}: {why}\n{self.log.read_text(errors='replace')[-3000:]}")

    def cpu_s(self) -> float:
        return ProcStats(self.proc.pid).cpu_s()


@dataclass
class Tracker:
    """Send and receive times (perf_counter seconds) by request id, and when the responder decided (its
    ``decided_at``, on the same clock once converted: both processes run on this machine)."""

    sent: dict[str, float] = field(default_factory=dict)
    received: dict[str, float] = field(default_factory=dict)
    decided: dict[str, float] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

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


Record = tuple[str, bytes, bytes, list[tuple[str, bytes]] | None]
"""An intent to publish: request id, key, value, headers."""


def intent_record(index: int, ring: KeyRing | None) -> Record:
    """:func:`intent_bytes` and, with trust on (``ring``), the header its agent's SDK would add."""
    rid, key, value = intent_bytes(index)
    if ring is None:
        return rid, key, value, None
    credential = AgentCredential.issue(ring, key.decode(), "support", "production")
    return rid, key, value, [(AUTH_HEADER, credential.authenticate(value))]


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


def load() -> float:
    return round(os.getloadavg()[0], 2)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator else float("nan")


def alternating(items: list[Responder], rounds: int) -> Iterator[tuple[int, Responder]]:
    """(round, responder): every responder once per round, the order reversed every other round."""
    for index in range(rounds):
        for item in items if index % 2 == 0 else reversed(items):
            yield index, item


async def partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic``, once the consumer's metadata knows them."""
    await consumer._client.add_topic(topic)
    while not consumer.partitions_for_topic(topic):
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]


# -- the load generator -------------------------------------------------------------------------------


class Client:
    """The agents' side: one producer of intents, one consumer of every responder's decisions."""

    def __init__(self, bootstrap: str) -> None:
        self.tracker = Tracker()
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all",
                                         **kafka_options())
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=5,
                                         auto_offset_reset="latest", **kafka_options())
        self.counter = 0
        self.task: asyncio.Task[None] | None = None

    async def start(self, topics: list[str]) -> None:
        """Start, reading the decisions ``topics`` from their ends."""
        await self.producer.start()
        await self.consumer.start()
        parts = [tp for topic in topics for tp in await partitions(self.consumer, topic)]
        self.consumer.assign(parts)
        await self.consumer.seek_to_end(*parts)
        self.task = asyncio.create_task(self._collect())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.consumer.stop()
        await self.producer.stop()

    async def _collect(self) -> None:
        tracker = self.tracker
        while True:
            batches = await self.consumer.getmany(timeout_ms=100)
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

    def next(self, to: Responder) -> Record:
        item = intent_record(self.counter, to.ring)
        self.counter += 1
        to.sent += 1
        return item

    async def paced(self, to: Responder, rate: int, seconds: float) -> list[str]:
        """Publish at ``rate`` intents/s for ``seconds``; returns the request ids."""
        ids: list[str] = []
        began = time.perf_counter()
        total = int(rate * seconds)
        while len(ids) < total:
            due = min(total, int((time.perf_counter() - began) * rate) + 1)
            while len(ids) < due:
                rid, key, value, headers = self.next(to)
                self.tracker.sent[rid] = time.perf_counter()
                await self.producer.send(to.names.intents, value, key=key, headers=headers)
                ids.append(rid)
            await asyncio.sleep(TICK_S)
        return ids

    async def first_decision(self, to: Responder) -> float:
        """Round-trip one intent (re-sent each second until answered); its latency in ms."""
        deadline = time.monotonic() + FIRST_DECISION_TIMEOUT_S
        while time.monotonic() < deadline:
            if to.proc.poll() is not None:
                raise to.failed("exited")
            rid, key, value, headers = self.next(to)
            self.tracker.sent[rid] = time.perf_counter()
            await self.producer.send_and_wait(to.names.intents, value, key=key, headers=headers)
            await self.wait_all([rid], 1.0)
            if rid in self.tracker.received:
                return round((self.tracker.received[rid] - self.tracker.sent[rid]) * 1000, 1)
        raise to.failed("no decision")

    async def warm(self, to: Responder) -> float:
        """A first decision, then a warm-up at 500/s fully answered; the first decision's ms."""
        first = await self.first_decision(to)
        warm = await self.paced(to, 500, WARM_S)
        await self.wait_all(warm, 60)
        if len(self.tracker.latencies_ms(warm)) < len(warm):
            raise to.failed("did not answer the warm-up")
        return first

    async def wait_all(self, ids: list[str], timeout_s: float) -> None:
        tracker = self.tracker
        deadline = time.monotonic() + timeout_s
        while not all(i in tracker.received for i in ids) and time.monotonic() < deadline:
            tracker.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tracker.arrived.wait(), 1.0)

    async def burst(self, to: Responder, count: int) -> tuple[int, float]:
        """Stop the responder, publish ``count`` intents, resume it and time the drain: (decisions per
        second from the resume to the last decision, CPU µs per intent). A responder stopped for
        :data:`MAX_STOPPED_S` (a slow machine) is resumed then, and the rest is published meanwhile."""
        batch = [self.next(to) for _ in range(count)]
        os.kill(to.proc.pid, signal.SIGSTOP)
        cpu0 = to.cpu_s()
        stopped = time.monotonic()
        resumed: float | None = None
        try:
            ids = []
            for rid, key, value, headers in batch:
                self.tracker.sent[rid] = time.perf_counter()
                await self.producer.send(to.names.intents, value, key=key, headers=headers)
                ids.append(rid)
                if resumed is None and time.monotonic() - stopped > MAX_STOPPED_S:
                    os.kill(to.proc.pid, signal.SIGCONT)
                    resumed = time.perf_counter()
                    print(f"{to.name} resumed after {MAX_STOPPED_S} s, {len(ids)} of {count} published",
                          file=sys.stderr)
            await self.producer.flush()
        finally:
            if resumed is None:
                os.kill(to.proc.pid, signal.SIGCONT)
                resumed = time.perf_counter()
        await self.wait_all(ids, 120)
        cpu = to.cpu_s() - cpu0
        last = max(self.tracker.received.get(i, resumed) for i in ids)
        done = sum(1 for i in ids if i in self.tracker.received)
        return int(done / (last - resumed)) if last > resumed else 0, 1e6 * cpu / count


# -- the responders -----------------------------------------------------------------------------------


def policy_path(name: str) -> Path:
    """A policy by file name: the bench's own (bench/policies/) before the examples."""
    own = ROOT / "bench" / "policies" / name
    return own if own.exists() else ROOT / "policies" / "examples" / name


async def start_worker(args: argparse.Namespace, bootstrap: str, workdir: Path, name: str,
                       ring: KeyRing | None, policy_name: str | None = None) -> Responder:
    """A worker on a fresh prefix (trust on with ``ring``) deciding by ``policy_name`` (default
    ``--policy``), ready."""
    prefix = "bench" + secrets.token_hex(4)
    names = TopicNames(prefix)
    policy_name = policy_name or args.policy
    policy = policy_path(policy_name).read_text()
    publisher = None if ring is None else SignerCredential.issue(ring, "publisher", "bench")
    await publish_policy(bootstrap, names.policies, policy, policy_name, publisher, options=kafka_options())
    if name == "shadow":
        await publish_shadow(bootstrap, names.policies, policy)
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "worker.log"
    trust = {"SLUICEGATE_TRUST_OFF": "1"}
    if ring is not None:
        signer = RequestSigner.generate()
        trust = {"SLUICEGATE_TRUST_KEYS": str(ring), "SLUICEGATE_TRUST_SIGNING_KEY": str(signer)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.worker", "--bootstrap", bootstrap, "--topic-prefix", prefix,
         "--partitions", str(args.partitions), "--workdir", str(workdir / "data"), "--web-port", str(port),
         "--log-level", "warning"], cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, **trust})
    responder = Responder(name, names, proc, log, ring)
    try:
        await wait_ready(port, proc)
    except SystemExit as exc:
        raise responder.failed(str(exc)) from None
    return responder


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


def start_floor(args: argparse.Namespace, bootstrap: str, workdir: Path, prefix: str, mode: str,
                shape: Shape) -> Responder:
    """A floor responder (:mod:`bench.floors`) on ``prefix`` (its topics already created)."""
    log = workdir / f"floor-{mode}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.floors", "--bootstrap", bootstrap, "--topic-prefix", prefix,
         "--partitions", str(args.partitions), "--mode", mode, "--decision-bytes", str(shape.decision_bytes),
         "--audit-bytes", str(shape.audit_bytes), "--audit-per-intent", str(shape.audit_per_intent),
         "--other-bytes", str(shape.other_bytes), "--other-per-intent", str(shape.other_per_intent)],
        cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return Responder(f"floor_{mode}", TopicNames(prefix), proc, log)


async def written(bootstrap: str, worker: Responder) -> dict[str, dict[str, float]]:
    """What the worker wrote per intent so far, per topic (intents and policies aside): records per
    intent and mean value bytes (of every record; a tombstone counts as 0 bytes)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                **kafka_options())
    await consumer.start()
    prefix = worker.names.prefix
    skip = {worker.names.intents, worker.names.policies}
    out: dict[str, dict[str, float]] = {}
    try:
        for topic in sorted(t for t in await consumer.topics() if t.startswith(prefix) and t not in skip):
            parts = await partitions(consumer, topic)
            begin, end = await consumer.beginning_offsets(parts), await consumer.end_offsets(parts)
            count = sum(end[tp] - begin[tp] for tp in parts)
            if not count:
                continue
            consumer.assign(parts)
            for tp in parts:
                consumer.seek(tp, begin[tp])
            sizes: list[int] = []
            left = {tp for tp in parts if end[tp] > begin[tp]}
            deadline = time.monotonic() + 30
            while left and time.monotonic() < deadline:
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    sizes += [len(r.value or b"") for r in records if r.offset < end[tp]]
                    if records and records[-1].offset >= end[tp] - 1:
                        left.discard(tp)
            out[topic] = {"per_intent": round(count / worker.sent, 3),
                          "bytes": round(statistics.fmean(sizes)) if sizes else 0}
    finally:
        await consumer.stop()
    return out


async def extra_hops(bootstrap: str, worker: Responder) -> tuple[float, dict[str, float]]:
    """Internal records (the shared-limits and agent-feedback topics: forwards, feedback, lease asks,
    grants and returns) the worker produced per intent sent to it: in all, and by message kind."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                **kafka_options())
    await consumer.start()
    kinds: dict[str, int] = {}
    try:
        internal = [f"{worker.names.prefix}.internal.{name}" for name in ("shared-limits", "agent-feedback")]
        parts = [tp for topic in internal for tp in await partitions(consumer, topic)]
        begin, end = await consumer.beginning_offsets(parts), await consumer.end_offsets(parts)
        left = {tp for tp in parts if end[tp] > begin[tp]}
        if left:
            consumer.assign(sorted(left))
            for tp in left:
                consumer.seek(tp, begin[tp])
        deadline = time.monotonic() + 30
        while left and time.monotonic() < deadline:
            for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
                for record in batch:
                    if record.offset < end[tp]:
                        kind = kind_of(record.value or b"") or "other"
                        kinds[kind] = kinds.get(kind, 0) + 1
                if batch and batch[-1].offset >= end[tp] - 1:
                    left.discard(tp)
    finally:
        await consumer.stop()
    records: int = sum(end[tp] - begin[tp] for tp in parts)
    sent = max(1, worker.sent)
    return round(records / sent, 4), {kind: round(n / sent, 4) for kind, n in sorted(kinds.items())}


def shape_of(worker: Responder, writes: dict[str, dict[str, float]]) -> Shape:
    """The writes floor's shape: the worker's decision and audit records, and everything else it wrote
    (changelogs, internal hops) as one kind of record of their mean size."""
    decision = writes.get(worker.names.decisions, {"bytes": 600})
    audit = writes.get(worker.names.audit, {"bytes": 0, "per_intent": 0})
    others = [v for k, v in writes.items() if k not in (worker.names.decisions, worker.names.audit)]
    per_intent = sum(v["per_intent"] for v in others)
    size = sum(v["per_intent"] * v["bytes"] for v in others) / per_intent if per_intent else 0
    return Shape(int(decision["bytes"]), int(audit["bytes"]), float(audit["per_intent"]), int(size),
                 round(per_intent, 3))


# -- the measurement ----------------------------------------------------------------------------------


@dataclass
class Slices:
    """One responder's slices at one rate, summed."""

    ids: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    sdk_cpu_s: float = 0.0
    elapsed_s: float = 0.0
    loads: list[float] = field(default_factory=list)

    def figures(self, tracker: Tracker) -> dict[str, Any]:
        lat = tracker.latencies_ms(self.ids)
        to_decided, after_decided = tracker.split_ms(self.ids)
        return {
            "p50_ms": round(pct(lat, 0.50), 2), "p99_ms": round(pct(lat, 0.99), 2),
            "p50_to_decided_ms": round(pct(to_decided, 0.50), 2),
            "p50_decided_to_received_ms": round(pct(after_decided, 0.50), 2),
            "mean_ms": round(statistics.fmean(lat), 2) if lat else None,
            "decided": len(lat), "sent": len(self.ids),
            "cpu_pct": round(100 * self.cpu_s / self.elapsed_s, 1),
            "us_per_intent": round(1e6 * self.cpu_s / len(self.ids)),
            "sdk_cpu_pct": round(100 * self.sdk_cpu_s / self.elapsed_s, 1),
            "load": [min(self.loads), max(self.loads)],
        }


async def rates(client: Client, responders: list[Responder], args: argparse.Namespace,
                results: dict[str, dict[str, Any]]) -> None:
    """Each rate in slices, alternating over the responders."""
    me = ProcStats(os.getpid())
    for rate in RATES:
        slices = {r.name: Slices() for r in responders}
        for _, responder in alternating(responders, args.rounds):
            acc = slices[responder.name]
            cpu0, me0, t0 = responder.cpu_s(), me.cpu_s(), time.perf_counter()
            ids = await client.paced(responder, rate, args.seconds / args.rounds)
            await client.wait_all(ids, 60)
            acc.elapsed_s += time.perf_counter() - t0
            acc.cpu_s += responder.cpu_s() - cpu0
            acc.sdk_cpu_s += me.cpu_s() - me0
            acc.ids += ids
            acc.loads.append(load())
        for responder in responders:
            results[responder.name][f"at_{rate}"] = slices[responder.name].figures(client.tracker)


async def bursts(client: Client, responders: list[Responder], args: argparse.Namespace,
                 results: dict[str, dict[str, Any]]) -> None:
    """``--rounds`` bursts per responder, alternating: medians of the drain rate and CPU per intent."""
    count = min(10_000, max(3000, int(3000 * args.seconds / args.rounds)))
    drains: dict[str, list[tuple[int, float, float]]] = {r.name: [] for r in responders}
    for _, responder in alternating(responders, args.rounds):
        rate, us = await client.burst(responder, count)
        drains[responder.name].append((rate, us, load()))
    for responder in responders:
        passes = drains[responder.name]
        results[responder.name] |= {
            "max_per_worker": int(statistics.median(p[0] for p in passes)),
            "burst_us_per_intent": round(statistics.median(p[1] for p in passes)),
            "burst_passes": [[p[0], round(p[1])] for p in passes], "burst_size": count,
            "burst_load": [min(p[2] for p in passes), max(p[2] for p in passes)],
            "rss_mb": round(ProcStats(responder.proc.pid).rss_mb(), 1),
        }


def versus_floors(worker: dict[str, Any], echo: dict[str, Any], io: dict[str, Any]) -> dict[str, float]:
    """A worker's ratios to the floors (latency at 1,000/s to echo, throughput and CPU to writes)."""
    return {
        "p50_ratio": ratio(worker["at_1000"]["p50_ms"], echo["at_1000"]["p50_ms"]),
        "p99_ratio": ratio(worker["at_1000"]["p99_ms"], echo["at_1000"]["p99_ms"]),
        "max_ratio": ratio(worker["max_per_worker"], io["max_per_worker"]),
        "cpu_vs_io_floor": ratio(worker["burst_us_per_intent"], io["burst_us_per_intent"]),
    }


def trust_ratios(on: dict[str, Any], off: dict[str, Any]) -> dict[str, float]:
    """Trust on over trust off."""
    return {
        "cpu_ratio_at_1000": ratio(on["at_1000"]["us_per_intent"], off["at_1000"]["us_per_intent"]),
        "cpu_ratio_burst": ratio(on["burst_us_per_intent"], off["burst_us_per_intent"]),
        "p50_ratio_at_1000": ratio(on["at_1000"]["p50_ms"], off["at_1000"]["p50_ms"]),
        "p99_ratio_at_1000": ratio(on["at_1000"]["p99_ms"], off["at_1000"]["p99_ms"]),
        "max_ratio": ratio(on["max_per_worker"], off["max_per_worker"]),
    }


@contextlib.contextmanager
def terminating(procs: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    """Terminate the processes started in the block (resumed first, should one be stopped)."""
    try:
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)


async def run(args: argparse.Namespace, bootstrap: str, workdir: Path) -> dict[str, Any]:
    """The worker(s) and the floors under the same load, alternating; their figures and ratios."""
    procs: list[subprocess.Popen[bytes]] = []
    with terminating(procs):
        workers = [await start_worker(args, bootstrap, workdir / "off", "trust_off", None)]
        procs.append(workers[0].proc)
        if args.trust:
            ring = KeyRing.generate()
            workers.append(await start_worker(args, bootstrap, workdir / "on", "trust_on", ring))
            procs.append(workers[1].proc)
        if args.shadow:
            workers.append(await start_worker(args, bootstrap, workdir / "shadow", "shadow", None))
            procs.append(workers[-1].proc)
        if args.baseline:
            workers.append(await start_worker(args, bootstrap, workdir / "baseline", "baseline", None,
                                              args.baseline))
            procs.append(workers[-1].proc)
        floor_prefixes = {mode: "floor" + secrets.token_hex(4) for mode in ("echo", "writes")}
        for prefix in floor_prefixes.values():
            await ensure_topics(bootstrap, floor_topics(prefix, args.partitions)[2], options=kafka_options())
        client = Client(bootstrap)
        await client.start([w.names.decisions for w in workers]
                           + [TopicNames(p).decisions for p in floor_prefixes.values()])
        try:
            results: dict[str, dict[str, Any]] = {}
            for worker in workers:
                results[worker.name] = {"first_decision_ms": await client.warm(worker)}
            writes = await written(bootstrap, workers[0])
            shape = shape_of(workers[0], writes)
            floors = [start_floor(args, bootstrap, workdir, prefix, mode, shape)
                      for mode, prefix in floor_prefixes.items()]
            procs += [f.proc for f in floors]
            for floor in floors:
                results[floor.name] = {"first_decision_ms": await client.warm(floor)}
            responders = [*workers, *floors]
            started_load = load()
            await rates(client, responders, args, results)
            await bursts(client, responders, args, results)
            for worker in workers:
                hops, by_kind = await extra_hops(bootstrap, worker)
                results[worker.name] |= {"extra_hops_per_intent": hops, "extra_hops_by_kind": by_kind}
        finally:
            await client.stop()
    echo, io = results["floor_echo"], results["floor_writes"]
    for worker in workers:
        results[worker.name] |= versus_floors(results[worker.name], echo, io)
    off = results["trust_off"]
    figures: dict[str, Any] = {
        "agents": AGENTS, "seconds": args.seconds, "rounds": args.rounds, "policy": args.policy,
        "partitions": args.partitions, "cpus": os.cpu_count(), "load_at_start": started_load,
        "load_at_end": load(),
        "floor_p50_ms": echo["at_1000"]["p50_ms"], "floor_p99_ms": echo["at_1000"]["p99_ms"],
        "floor_max_per_s": echo["max_per_worker"], "floor_us_per_intent": echo["burst_us_per_intent"],
        "io_floor_max_per_s": io["max_per_worker"], "io_floor_us_per_intent": io["burst_us_per_intent"],
        "p50_ms": off["at_1000"]["p50_ms"], "p99_ms": off["at_1000"]["p99_ms"],
        "max_per_worker": off["max_per_worker"], "burst_us_per_intent": off["burst_us_per_intent"],
        **versus_floors(off, echo, io),
        "worker_writes_per_intent": writes,
    }
    if args.trust:
        figures["trust_on_vs_off"] = trust_ratios(results["trust_on"], off)
    if args.shadow:
        figures["shadow_vs_off"] = trust_ratios(results["shadow"], off)
    figures["extra_hops_per_intent"] = off["extra_hops_per_intent"]
    figures["extra_hops_by_kind"] = off["extra_hops_by_kind"]
    if args.baseline:
        figures["baseline_max_per_worker"] = results["baseline"]["max_per_worker"]
        figures["max_vs_baseline"] = ratio(off["max_per_worker"], results["baseline"]["max_per_worker"])
    return figures | {"responders": results}


# -- a shadow policy (--shadow) ---------------------------------------------------------------------------


async def publish_shadow(bootstrap: str, topic: str, policy: str) -> None:
    """The worker's own policy again, renamed, as its shadow: each intent is decided twice by the same
    rules (own state, one more audit record), so the cost measured is the shadow's alone."""
    text = re.sub(r"^policy: *(\S+)", r"policy: \1-shadow", policy, count=1, flags=re.MULTILINE)
    await publish(bootstrap, topic, text, "shadow", role=SHADOW, options=kafka_options())


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=12.0, help="seconds per rate and responder")
    parser.add_argument("--rounds", type=int, default=6,
                        help="slices per rate and bursts per responder: at 1,000/s a 2-core machine is near "
                             "its knee, where one-second slices gave trust on/off p50 ratios of 1.0-2.3 "
                             "between runs, and six two-second slices 0.96-1.17")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--policy", default="customer_support.yaml")
    parser.add_argument("--trust", action="store_true",
                        help="also a worker with trust on: it verifies every intent and authenticates its "
                             "decisions")
    parser.add_argument("--baseline", metavar="POLICY",
                        help="also a worker deciding by POLICY (e.g. fleet_budget_unshared.yaml: the same "
                             "without its shared limit), alternating: max_vs_baseline is the max per "
                             "worker over its")
    parser.add_argument("--shadow", action="store_true",
                        help="also a worker evaluating a shadow policy (its own policy again): its ratios "
                             "to trust_off (shadow_vs_off) are the shadow's cost")


def main() -> None:
    bench_main(__doc__ or "", arguments, run)


if __name__ == "__main__":
    main()
