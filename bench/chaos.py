"""Chaos: a fleet at a steady rate through N workers while faults are injected, then a reconciliation.

On loopback only, bounded in time and traffic, stopping by itself and stopping everything it started.
It starts its own Kafka broker (the local launcher, on a free port, data in a temporary directory; with
``--brokers 3`` a cluster of three nodes, :mod:`infra.kafka.cluster`, every topic on all three),
``--workers`` workers (``python -m streams.worker``) with trust on (keys made for the run, as
``sluicegate trust`` makes them), the audit sink (the production sink whose store the run can make
fail, :mod:`bench.chaos_sink`), a simulated reviewer answering approval requests on the reviewer topic
with signed verdicts, and a fleet of agents calling ``Gate.authorize`` at ``--rate`` intents/s for
``--seconds``, on a policy with a per-agent limit, a fleet-wide budget and approvals.

With ``--kafka-protocol SASL_PLAINTEXT|SASL_SSL|SSL`` the broker is the secure one of ``kafka start
--secure`` with the ACL matrix applied, and each process connects as its role's user
(:mod:`bench.chaos_kafka`).

Faults, from ``--seed`` (:mod:`bench.chaos_faults`): a worker SIGKILLed and restarted after a pause; a
worker SIGSTOPped past the session timeout, then SIGCONTed; a worker stopped cleanly and started; the
broker stopped and started on the same port and data directory (of a cluster: one node SIGKILLed); the
sink SIGKILLed and restarted; the store failing every insert for a while; bad records on the intents
topic (:mod:`bench.chaos_inputs`).

At the end it reconciles (:mod:`bench.chaos_reconcile`) what each agent was told against the decisions
topic and the audit in ClickHouse, and prints a table (``--json``: one JSON line).

    python bench/chaos.py --json --seconds 300
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.broker import require_open_broker  # noqa: E402
from bench.chaos_faults import (  # noqa: E402
    KILL_PAUSE_S,
    SETTLE_S,
    STOPPED_S,
    STORE_OUTAGE_S,
    FaultPlan,
    Managed,
)
from bench.chaos_fleet import DEPLOY, READ, REFUND  # noqa: E402
from bench.chaos_inputs import corpus, variant  # noqa: E402
from bench.chaos_internal import internal_kinds  # noqa: E402
from bench.chaos_kafka import CHOICES, OPEN, ChaosKafka, broker_config  # noqa: E402
from bench.chaos_reconcile import COUNTERS, Call, Limit, Windows, reconcile, table  # noqa: E402
from consumers.audit_sink import DEFAULT_GROUP_ID  # noqa: E402
from consumers.audit_store import lock_path, running_sink  # noqa: E402
from infra.clickhouse.migrate import DEFAULT_DATABASE  # noqa: E402
from infra.kafka import BrokerConfig, start_broker, stop_broker  # noqa: E402
from infra.kafka.cluster import cluster_configs, start_cluster, stop_cluster  # noqa: E402
from infra.kafka.process import free_port  # noqa: E402
from schemas import Decision, TopicNames  # noqa: E402
from sluicegate.demo.fleet import SimulatedAgent  # noqa: E402
from sluicegate.demo.processes import worker_readiness  # noqa: E402
from sluicegate.demo.reviewer import SimulatedReviewer, reviewers_yaml  # noqa: E402
from sluicegate.demo.trust import DemoTrust  # noqa: E402
from sluicegate.settings import Settings  # noqa: E402
from sluicegate.trust import AUTH_HEADER  # noqa: E402
from streams.policy_source import publish_policy  # noqa: E402

log = logging.getLogger("chaos")
WINDOW_MS = 60_000
PER_AGENT = 30
APPROVAL_TIMEOUT_S = 20
DECISION_TIMEOUT_S = 30.0
"""The agents wait this long for a decision by default: longer than a worker's failover."""
START_TIMEOUT_S = 180.0
AUDIT_WAIT_S = 120.0
BAD_VARIANTS = 20
FLEET_SHARE_RATE = 125.0
"""Intents/s per fleet process by default (:mod:`bench.chaos_fleet` says why the fleet is split)."""
FAULT_TAIL_S = 15.0
"""No fault starts in the last seconds of the traffic: the run ends on a settled system."""


def policy(budget: float) -> str:
    """The chaos policy: reads allowed, refunds up to 100 within a per-agent limit and a fleet budget,
    deploys reviewed, anything else blocked."""
    return f"""
policy: chaos
default: BLOCK
rules:
  - id: reads
    match: {{tool: {READ}}}
    decision: ALLOW
  - id: small-refunds
    match: {{tool: {REFUND}}}
    when: {{field: params.amount, op: lte, value: 100}}
    decision: ALLOW
  - id: deploys-reviewed
    match: {{tool: {DEPLOY}}}
    decision: REQUIRE_APPROVAL
    approval: {{group: reviewers, timeout: {APPROVAL_TIMEOUT_S}s}}
limits:
  - id: refunds-per-agent
    match: {{tool: {REFUND}}}
    key: agent
    window: {WINDOW_MS // 1000}s
    count: {PER_AGENT}
    decision: BLOCK
  - id: fleet-refund-budget
    match: {{tool: {REFUND}}}
    key: fleet
    window: {WINDOW_MS // 1000}s
    sum: params.amount
    max: {budget}
    decision: BLOCK
"""


@dataclass
class Run:
    """Everything one run started and collected."""

    args: argparse.Namespace
    base: Path
    brokers: list[BrokerConfig]
    """The Kafka nodes: one broker, or a replicated cluster (``--brokers 3``)."""
    topics: TopicNames
    trust: DemoTrust
    workers: list[Managed] = field(default_factory=list)
    sink: Managed | None = None
    calls: list[Call] = field(default_factory=list)
    crashes: Counter[str] = field(default_factory=Counter)
    outage_exits: int = 0
    outages: Windows = field(default_factory=Windows)
    bad_inputs: Counter[str] = field(default_factory=Counter)
    rss_max_mb: float = 0.0
    traffic_s: float = 0.0
    """How long the fleet sent (from its start to the stop), for the rate it reached."""
    broker_down: bool = False
    final_seen: dict[str, float] = field(default_factory=dict)
    """When (monotonic) each request's first final decision was read from the decisions topic, live."""

    @property
    def broker(self) -> BrokerConfig:
        """The first node (the only one, unless the cluster is replicated)."""
        return self.brokers[0]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{broker.port}" for broker in self.brokers)

    @cached_property
    def kafka(self) -> ChaosKafka:
        """How each role reaches the broker (its user on a secure one)."""
        return ChaosKafka.of(self.broker)

    @property
    def audit_url(self) -> str:
        return f"chdb://{self.base / 'audit'}"

    @property
    def managed(self) -> list[Managed]:
        return [*self.workers, *([self.sink] if self.sink is not None else [])]


# -- processes ---------------------------------------------------------------------------------------

def _worker(run: Run, index: int) -> Managed:
    argv = ["-m", "streams.worker", "--bootstrap", run.bootstrap, "--topic-prefix", run.topics.prefix,
            "--partitions", str(run.args.partitions), "--workdir", str(run.base / f"worker-{index}"),
            "--web-port", str(free_port()), "--reviewers", str(run.base / "reviewers.yaml"),
            "--log-level", "info"]  # the take-overs (restore counts and times) in worker-N.log
    env = {**run.trust.worker_env(), **run.kafka.env("worker")}
    return Managed(f"worker-{index}", argv, env, run.base / f"worker-{index}.log")


def _sink(run: Run) -> Managed:
    argv = [str(ROOT / "bench" / "chaos_sink.py"), "--url", run.audit_url, "--bootstrap", run.bootstrap,
            "--topic-prefix", run.topics.prefix, "--group", DEFAULT_GROUP_ID, "--decoders", "0"]
    return Managed("sink", argv, run.kafka.env("sink"), run.base / "sink.log")


def _port(worker: Managed) -> int:
    return int(worker.argv[worker.argv.index("--web-port") + 1])


async def _wait_worker(worker: Managed, ready: bool) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not worker.running:
            raise RuntimeError(f"{worker.name} exited at start; log {worker.log}")
        answer = await asyncio.to_thread(worker_readiness, _port(worker))
        if answer is not None and (not ready or answer.get("ready") is True):
            return
        await asyncio.sleep(0.25)
    raise RuntimeError(f"{worker.name} not {'ready' if ready else 'up'} in {START_TIMEOUT_S:.0f} s")


async def _wait_sink(run: Run) -> None:
    """Until the sink process is serving (its query endpoint's lock file names its pid)."""
    path = lock_path(run.audit_url)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        sink = run.sink
        with contextlib.suppress(OSError, ValueError):
            if sink is not None and sink.proc is not None and path is not None and \
                    json.loads(path.read_text() or "{}").get("pid") == sink.proc.pid:
                return
        await asyncio.sleep(0.25)
    raise RuntimeError(f"the sink is not serving after {START_TIMEOUT_S:.0f} s")


async def _supervise(run: Run) -> None:
    """Restart what exited without being asked to; count it as a crash (or, while the broker is down or
    settling, as an exit caused by the outage). Sample the workers' memory."""
    while True:
        await asyncio.sleep(0.5)
        for child in run.managed:
            run.rss_max_mb = max(run.rss_max_mb, child.rss_mb() if child in run.workers else 0.0)
            if child.proc is None or child.running or child.expected_exit:
                continue
            if run.broker_down:  # fail-stop while the broker is away: started again once it is back
                run.outage_exits += 1
                child.expected_exit = True
                continue
            else:
                run.crashes[child.name] += 1
                log.error("%s exited by itself (%s); restarting", child.name, child.proc.returncode)
            child.start()


# -- faults --------------------------------------------------------------------------------------------

async def _recovered(run: Run) -> None:
    """Until every worker owns partitions again (restored): a worker or broker fault is over only then,
    so the next one meets a recovered group (a take-over needs the session timeout and a restore; a
    broker's restart takes a minute on a loaded machine). Faults that overlap a recovery turn a run into
    a test of how long the machine takes to restore, not of what survives a fault."""
    for worker in run.workers:
        with contextlib.suppress(RuntimeError):
            await _wait_worker(worker, ready=True)


def _injectors(run: Run) -> dict[str, Any]:
    async def worker_kill(rng: random.Random) -> None:
        worker = rng.choice(run.workers)
        worker.stop(signal.SIGKILL)
        await asyncio.sleep(KILL_PAUSE_S)
        worker.start()
        await _recovered(run)

    async def worker_stop(rng: random.Random) -> None:
        worker = rng.choice(run.workers)
        worker.send(signal.SIGSTOP)
        await asyncio.sleep(STOPPED_S)
        worker.send(signal.SIGCONT)
        await _recovered(run)

    async def worker_restart(rng: random.Random) -> None:
        worker = rng.choice(run.workers)
        await _wait_worker(worker, ready=False)  # up (its SIGTERM handler installed): a clean stop
        await asyncio.to_thread(worker.stop)
        worker.start()
        await _recovered(run)

    async def broker_restart(rng: random.Random) -> None:
        """The broker stopped and started on its port and data (of a replicated cluster: one node
        killed, then started again); over once every worker is ready again (the workers that stopped for
        want of a broker started again)."""
        started = time.monotonic()
        if len(run.brokers) > 1:
            node = rng.choice(run.brokers)
            await asyncio.to_thread(stop_broker, node.data_dir, 0.0)  # SIGKILL: no controlled shutdown
            await asyncio.to_thread(start_broker, node)
        else:
            run.broker_down = True
            try:
                await asyncio.to_thread(stop_broker, run.broker.data_dir)
                await asyncio.to_thread(start_broker, run.broker)
            finally:
                run.broker_down = False
        for child in run.managed:
            if not child.running:
                child.start()
        await _recovered(run)
        run.outages.add(started, time.monotonic() + SETTLE_S)

    async def sink_kill(rng: random.Random) -> None:
        assert run.sink is not None
        run.sink.stop(signal.SIGKILL)
        run.sink.start()

    async def store_outage(rng: random.Random) -> None:
        assert run.sink is not None
        await _wait_sink(run)  # a sink still starting has no handler yet: the signal would end it
        run.sink.send(signal.SIGUSR1)
        await asyncio.sleep(STORE_OUTAGE_S)
        await _wait_sink(run)
        run.sink.send(signal.SIGUSR2)

    async def bad_input(rng: random.Random) -> None:
        await _publish_bad_input(run, rng)

    return {"worker_kill": worker_kill, "worker_stop": worker_stop, "worker_restart": worker_restart,
            "broker_restart": broker_restart, "sink_kill": sink_kill, "store_outage": store_outage,
            "bad_input": bad_input}


async def _publish_bad_input(run: Run, rng: random.Random) -> None:
    """The corpus and some variants; every other record authenticated with a real agent credential
    (so it reaches the parser rather than being refused as unauthenticated)."""
    agent = f"chaos-bad-{rng.randrange(4)}"
    credential = run.trust.agents([SimulatedAgent(agent, "support", "production", "team")])[0]
    records = corpus(agent, rng) + [variant(agent, rng) for _ in range(BAD_VARIANTS)]
    while run.broker_down:  # bad input is for the workers, not for a broker that is away
        await asyncio.sleep(0.5)
    producer = AIOKafkaProducer(bootstrap_servers=run.bootstrap, max_request_size=1 << 20,
                                **run.kafka.options("agent"))
    await producer.start()
    try:
        for index, (kind, value) in enumerate(records):
            headers = [(AUTH_HEADER, credential.authenticate(value))] if index % 2 == 0 else None
            with contextlib.suppress(Exception):  # the broker itself may refuse (over its size limit)
                await producer.send_and_wait(run.topics.intents, value, key=agent.encode(), headers=headers)
                run.bad_inputs[kind] += 1
    finally:
        await producer.stop()


# -- the fleet -----------------------------------------------------------------------------------------

async def _drive(run: Run, faults: asyncio.Task[None]) -> None:
    """The fleet's calls at the rate, split over ``--fleet-processes`` processes
    (:mod:`bench.chaos_fleet`), for the run's seconds and until the faults are over and settled; then
    the calls in flight, and what each share's agents were told."""
    args = run.args
    ids = [f"chaos-{index:04d}" for index in range(args.agents)]
    shares = min(args.fleet_processes, len(ids))
    children: list[tuple[asyncio.subprocess.Process, Path]] = []
    drain_s = APPROVAL_TIMEOUT_S + 2 * args.decision_timeout
    for index in range(shares):
        out, config = run.base / f"fleet-{index}.calls.json", run.base / f"fleet-{index}.json"
        config.write_text(json.dumps({
            "bootstrap": run.bootstrap, "prefix": run.topics.prefix, "trust": str(run.trust.directory),
            "agents": ids[index::shares], "rate": args.rate / shares, "seed": args.seed * 1000 + index,
            "decision_timeout": args.decision_timeout, "drain_s": drain_s, "out": str(out),
            "log": str(run.base / f"fleet-{index}.log")}))
        child = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "bench" / "chaos_fleet.py"), str(config),
            stdin=asyncio.subprocess.PIPE, env={**os.environ, **run.kafka.env("agent")})
        children.append((child, out))
    began = time.monotonic()
    try:
        await asyncio.gather(asyncio.sleep(args.seconds), _settled(faults))
    finally:
        run.traffic_s = time.monotonic() - began
        for child, _ in children:
            assert child.stdin is not None
            with contextlib.suppress(OSError):
                child.stdin.write(b"stop\n")
                child.stdin.close()
        for child, _ in children:
            try:
                await asyncio.wait_for(child.wait(), drain_s + START_TIMEOUT_S)
            except TimeoutError:
                child.kill()
                await child.wait()
    for child, out in children:
        if child.returncode != 0 or not out.exists():
            raise RuntimeError(f"a fleet process ended with {child.returncode}; log {out.parent}/fleet-*.log")
        run.calls.extend(Call(**call) for call in json.loads(out.read_text()))


async def _settled(faults: asyncio.Task[None]) -> None:
    """Once the faults are over, the time the system gets to settle before the traffic stops."""
    await asyncio.wait([faults])
    await asyncio.sleep(SETTLE_S)


async def _review(run: Run) -> None:
    """The simulated reviewer, started again should the broker's restart end it."""
    while True:
        reviewer = SimulatedReviewer(run.bootstrap, run.topics, run.args.seed, trust=run.trust.reviewers,
                                     options=run.kafka.options("reviewer"))
        with contextlib.suppress(Exception):
            await reviewer.run(asyncio.Event())
        await asyncio.sleep(1.0)


# -- reconciliation sources --------------------------------------------------------------------------

async def _watch_finals(run: Run) -> None:
    """Read the decisions topic as the run goes and note when each request's first final decision
    appeared, so a conflict can say whether its final was there before its agent's answer (a decision
    the SDK missed) or only after it (a final that reached the broker late). Across broker restarts
    the consumer reconnects; its own fetch lag after one (about a second) counts as late."""
    while True:
        consumer = AIOKafkaConsumer(run.topics.decisions, bootstrap_servers=run.bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    fetch_max_wait_ms=100, **run.kafka.options("agent"))
        try:
            await consumer.start()
            while True:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    now = time.monotonic()
                    for record in records:
                        with contextlib.suppress(ValueError):
                            decision = Decision.model_validate_json(record.value or b"")
                            if decision.final:
                                run.final_seen.setdefault(str(decision.request_id), now)
        except (KafkaError, OSError) as exc:
            log.info("watching the decisions topic: %r; starting again", exc)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
        await asyncio.sleep(1.0)


async def _topic_finals(run: Run) -> dict[str, list[str]]:
    """Every final decision on the decisions topic, per request id (one entry per record)."""
    consumer = AIOKafkaConsumer(run.topics.decisions, bootstrap_servers=run.bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                **run.kafka.options("agent"))
    await consumer.start()
    finals: dict[str, list[str]] = defaultdict(list)
    try:
        while not consumer.assignment():  # assigned every partition once the metadata is in
            await asyncio.sleep(0.1)
        tps = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                for record in records:
                    decision = Decision.model_validate_json(record.value or b"")
                    if decision.final:
                        finals[str(decision.request_id)].append(decision.decision.value)
    finally:
        await consumer.stop()
    return finals


def _audit_finals(run: Run) -> tuple[dict[str, Counter[str]], int]:
    """The final decisions in ClickHouse per request id and decision, as reports read them (the
    ``decision_events`` table: each event once), and the extra copies of final decision events in
    ``audit_events`` (a redelivered record audited again: same event id, a place of its own in the
    hash chain). Read through the running sink."""
    store = running_sink(run.audit_url)
    if store is None:
        raise RuntimeError("the audit sink is not running")
    result = store.query(
        f"SELECT event_id, decision, count() FROM {DEFAULT_DATABASE}.decision_events "
        "WHERE decision_final GROUP BY event_id, decision")
    rows: dict[str, Counter[str]] = defaultdict(Counter)
    for event_id, decision, count in result.rows:
        rows[str(event_id).split(":")[0]][str(decision)] += int(count)
    copies = store.query(
        f"SELECT count() - uniqExact(event_id) FROM {DEFAULT_DATABASE}.audit_events FINAL "
        "WHERE event_type = 'decision' AND decision_final")
    return rows, int(copies.rows[0][0])


async def _audit_when_settled(run: Run, decided: set[str]) -> tuple[dict[str, Counter[str]], int]:
    """The audit once it holds every decided request, or stops growing for a while."""
    deadline, last, since = time.monotonic() + AUDIT_WAIT_S, -1, time.monotonic()
    while True:
        try:
            audit, copies = await asyncio.to_thread(_audit_finals, run)
        except Exception as exc:  # the sink restarting: ask again
            log.info("audit not readable yet: %s", exc)
            audit, copies = {}, 0
        have = len(decided & set(audit))
        if have == len(decided) or time.monotonic() > deadline or (have == last and
                                                                   time.monotonic() - since > 30):
            return audit, copies
        if have != last:
            last, since = have, time.monotonic()
        await asyncio.sleep(1.0)


# -- the run -------------------------------------------------------------------------------------------

async def _start(run: Run) -> None:
    (run.base / "reviewers.yaml").write_text(reviewers_yaml())
    await run.kafka.apply_acls(run.topics.prefix)
    run.workers = [_worker(run, index) for index in range(run.args.workers)]
    first = run.workers[0]
    first.start()
    await _wait_worker(first, ready=False)  # it created the topics
    await publish_policy(run.bootstrap, run.topics.policies, policy(run.args.rate * 300.0), "chaos.yaml",
                         run.trust.publisher, options=run.kafka.options("publisher"))
    await _wait_worker(first, ready=True)
    for worker in run.workers[1:]:
        worker.start()
    for worker in run.workers[1:]:
        await _wait_worker(worker, ready=False)
    run.sink = _sink(run)
    run.sink.start()


async def _execute(run: Run) -> dict[str, Any]:
    await _start(run)
    began = time.monotonic()
    plan = FaultPlan(run.args.seed, began + run.args.seconds - FAULT_TAIL_S, _injectors(run))
    faults = asyncio.create_task(plan.run())
    helpers = [asyncio.create_task(_supervise(run)), asyncio.create_task(_review(run)),
               asyncio.create_task(_watch_finals(run)), faults]
    try:
        await _drive(run, faults)
        await faults
    finally:
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
    topic = await _topic_finals(run)
    internal = await internal_kinds(run.bootstrap, run.topics, run.kafka.options("worker"))
    sent = {call.request_id for call in run.calls}
    audit, copies = await _audit_when_settled(run, {rid for rid in topic if rid in sent})
    limits = [Limit(REFUND, WINDOW_MS, per_agent_count=PER_AGENT),
              Limit(REFUND, WINDOW_MS, fleet_sum=run.args.rate * 300.0)]
    result = reconcile(run.calls, topic, audit, limits, plan.windows, run.outages, run.final_seen)
    if run.args.keep is not None:  # what the counters were computed from, for a look afterwards
        (run.base / "collected.json").write_text(json.dumps({
            "calls": [dataclasses.asdict(call) for call in run.calls], "topic": topic, "audit": audit,
            "faults": plan.windows.spans, "outages": run.outages.spans, "final_seen": run.final_seen}))
    return {
        **result,
        "audit_event_copies": copies,
        "internal_records": internal,
        "bad_inputs": sum(run.bad_inputs.values()),
        "crashes": sum(run.crashes.values()),
        "crashes_by_process": dict(run.crashes),
        "exits_during_broker_outage": run.outage_exits,
        "faults": dict(plan.fired),
        "faults_not_injected": dict(plan.failed),
        "faults_total": sum(plan.fired.values()),
        "worker_rss_max_mb": round(run.rss_max_mb, 1),
        "rate_reached": round(len(run.calls) / run.traffic_s, 1) if run.traffic_s else 0.0,
        "fleet_processes": run.args.fleet_processes,
        "seconds": run.args.seconds, "rate": run.args.rate, "workers": run.args.workers,
        "agents": run.args.agents, "seed": run.args.seed, "kafka_protocol": run.args.kafka_protocol,
        "brokers": len(run.brokers),
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON line after the table")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--rate", type=float, default=500.0, help="intents per second")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kafka-protocol", choices=CHOICES, default=OPEN,
                        help="the broker's client listener: open, or secure (kafka start --secure) with the "
                             "ACL matrix and one user per role")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--brokers", type=int, choices=(1, 3), default=1,
                        help="Kafka nodes: one broker (its restart stops everything), or a cluster of three "
                             "replicating every topic (one node killed and started again at a time)")
    parser.add_argument("--agents", type=int, default=0,
                        help="default: one per intent/s (each agent calls once a second, one call at a time)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fleet-processes", type=int, default=0,
                        help=f"processes the agents are split over (default: one per {FLEET_SHARE_RATE:g}/s)")
    parser.add_argument("--decision-timeout", type=float, default=DECISION_TIMEOUT_S,
                        help="how long each agent waits for a decision (the SDK's decision_timeout_s)")
    parser.add_argument("--keep", type=Path, default=None, help="run under this directory and keep it")
    args = parser.parse_args(argv)
    if args.brokers > 1 and args.kafka_protocol != OPEN:
        parser.error("--brokers 3 runs an open cluster: leave --kafka-protocol at PLAINTEXT")
    args.agents = args.agents or max(20, int(args.rate))
    args.fleet_processes = args.fleet_processes or max(1, math.ceil(args.rate / FLEET_SHARE_RATE))
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.brokers > 1:  # every topic the workers create on three copies, two in sync for a write
        os.environ.update(SLUICEGATE_KAFKA_REPLICATION_FACTOR=str(args.brokers),
                          SLUICEGATE_KAFKA_MIN_INSYNC_REPLICAS="2")
    settings = Settings()
    require_open_broker(settings, "the chaos run starts (and restarts) its own broker and gives each process "
                        "its role's settings: unset SLUICEGATE_KAFKA_SECURITY_PROTOCOL and pass "
                        "--kafka-protocol")
    with contextlib.ExitStack() as stack:
        base = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sluicegate-chaos-")))
        base.mkdir(parents=True, exist_ok=True)
        logging.basicConfig(filename=base / "chaos.log", level=logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        cache, version = settings.artifact_cache_dir.resolve(), settings.kafka_version
        if args.brokers > 1:
            brokers = cluster_configs(base / "kafka", cache, version, nodes=args.brokers)
        else:
            brokers = [broker_config(BrokerConfig(port=free_port(), data_dir=base / "kafka", cache_dir=cache,
                                                  version=version), args.kafka_protocol)]
        run = Run(args, base, brokers, TopicNames(f"chaos-{secrets.token_hex(4)}"),
                  DemoTrust.create(base / "trust"))
        if len(brokers) > 1:
            start_cluster(brokers)
        else:
            start_broker(brokers[0])
        try:
            result = asyncio.run(_execute(run))
        finally:
            for child in run.managed:
                child.stop()
            stop_cluster(brokers)
    if args.keep is not None:
        (args.keep / "result.json").write_text(json.dumps(result))
    print(table(result))
    if args.json:
        print(json.dumps(result))
    return 1 if any(result[name] for name in COUNTERS) else 0


if __name__ == "__main__":
    sys.exit(main())
