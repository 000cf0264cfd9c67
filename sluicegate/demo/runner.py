"""`sluicegate demo`: a real broker, a real worker, the audit sink, a simulated fleet and reviewer.

Everything runs for real on this machine: the local Kafka broker (unless KAFKA_BOOTSTRAP_SERVERS
names one), a worker subprocess deciding with `policies/demo.yaml`, the audit sink subprocess
storing every decision in the embedded ClickHouse, a reviewer answering approval requests, and a
few hundred simulated agents calling their tools through `gate.guard` at a steady rate (so outcomes
reach the audit too). The first third of the run is calm: the misbehaving agents work like the rest of
their role, which gives the audit report a history to compare the rogue period with. Each run uses its
own topic prefix and state directory under `<state dir>/demo/`, so runs do not see each other.

Trust is on unless ``SLUICEGATE_TRUST_OFF=1``: the run makes its own keys under `<run>/trust`, and
every agent, the policy and the reviewers' verdicts are signed (:mod:`sluicegate.demo.trust`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.console import Console
from rich.live import Live

from infra.kafka import BrokerConfig, start_broker, stop_broker
from policies import DEMO_POLICY
from schemas import TopicNames
from sluicegate.demo.fleet import FleetSimulator, build_fleet
from sluicegate.demo.processes import Child, DemoError, free_port, wait_for
from sluicegate.demo.reviewer import SimulatedReviewer, reviewers_yaml
from sluicegate.demo.stats import DemoStats
from sluicegate.demo.tools import FleetTools, ObservedGate
from sluicegate.demo.trust import TRUST_OFF_ENV, DemoTrust
from sluicegate.settings import Settings
from streams.policy_source import publish_policy

WORKER_START_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 10.0
SINK_FLUSH_S = 2.0
DEMO_MAX_EVENT_SKEW_S = 2 * 24 * 3600
CALM_SHARE = 1 / 3
"""The share of the run before the misbehaving agents start (their history)."""
VIEW_REFRESH_S = 0.25


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """How big and how long the demo is."""

    agents: int = 300
    rate: float = 200.0
    seconds: float = 60.0
    seed: int = 7
    live: bool = True


def run_demo(settings: Settings, config: DemoConfig, console: Console) -> DemoStats:
    """Run the whole demo and print its summary and audit report; stops what it started."""
    run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = (settings.state_dir / "demo" / run_id).resolve()
    topics = TopicNames(f"demo-{run_id}")
    broker = None if settings.kafka_bootstrap_servers else BrokerConfig.from_settings(settings)
    if broker is not None:
        console.print(f"starting the local Kafka broker on port {settings.kafka_port} ...")
        start_broker(broker)
    bootstrap = settings.bootstrap_servers
    base.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=base / "demo.log", level=logging.INFO, force=True)
    reviewers = base / "reviewers.yaml"
    reviewers.write_text(reviewers_yaml())
    audit_url = f"chdb://{base / 'audit'}"
    trust = None if settings.trust_off else DemoTrust.create(base / "trust")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SLUICEGATE_TOPIC_PREFIX": topics.prefix,
        "SLUICEGATE_REVIEWERS_FILE": str(reviewers),
        "SLUICEGATE_CLICKHOUSE_URL": audit_url,
    }
    worker_env = {**env, **(trust.worker_env() if trust is not None else TRUST_OFF_ENV)}
    console.print(f"trust on: keys in {trust.directory}" if trust is not None
                  else "trust OFF (SLUICEGATE_TRUST_OFF): nothing is signed or verified")
    children: list[Child] = []
    try:
        worker_port = free_port()
        worker = Child.start(
            "worker",
            [
                "-m",
                "streams.worker",
                "--bootstrap",
                bootstrap,
                "--topic-prefix",
                topics.prefix,
                "--workdir",
                str(base / "worker"),
                "--web-port",
                str(worker_port),
                "--log-level",
                "warning",
                # The off-hours rogue stamps its deploys at 2 am (up to a day back) for the off-hours
                # rule to judge; a deployment keeps the default of minutes.
                "--max-event-skew",
                str(DEMO_MAX_EVENT_SKEW_S),
            ],
            base / "worker.log",
            worker_env,
        )
        children.append(worker)
        console.print(f"worker starting (log {worker.log_path}) ...")
        wait_for(worker, worker_port, ready=False, timeout_s=WORKER_START_TIMEOUT_S)
        publisher = trust.publisher if trust is not None else None
        policy = asyncio.run(
            publish_policy(bootstrap, topics.policies, DEMO_POLICY.read_text(), str(DEMO_POLICY), publisher,
                           options=settings.kafka_client_options())
        )
        signed = f", signed by publisher {publisher.name}" if publisher is not None else ""
        console.print(f"published policy {policy.name} {policy.version} ({policy.rule_count} rules{signed})")
        wait_for(worker, worker_port, ready=True, timeout_s=WORKER_START_TIMEOUT_S)
        sink = Child.start(
            "audit sink",
            [
                "-m",
                "consumers.audit_sink",
                "--url",
                audit_url,
                "--bootstrap",
                bootstrap,
                "--topic-prefix",
                topics.prefix,
                "--decoders",
                "0",
            ],
            base / "audit_sink.log",
            env,
        )
        children.append(sink)
        stats, rogue_s = asyncio.run(_drive(settings, bootstrap, topics, config, console, trust))
        console.print(stats.render("summary"))
        sink.require_running()
        _print_audit_report(console, audit_url, env, rogue_s)
        return stats
    finally:
        for child in reversed(children):
            child.stop()
        if broker is not None:
            stop_broker(broker.data_dir)


async def _drive(
    settings: Settings, bootstrap: str, topics: TopicNames, config: DemoConfig, console: Console,
    trust: DemoTrust | None,
) -> tuple[DemoStats, float]:
    """Run the fleet; the stats, and how many seconds ago the misbehaving agents started."""
    agents = build_fleet(config.agents, config.seed)
    simulator = FleetSimulator(agents, config.seed)
    stats = DemoStats(asked_rate=config.rate)
    reviewer = SimulatedReviewer(bootstrap, topics, config.seed,
                                 trust=trust.reviewers if trust is not None else None,
                                 options=settings.kafka_client_options())
    listening = asyncio.Event()
    reviewer_task = asyncio.create_task(reviewer.run(listening))
    gate_settings = settings.model_copy(
        update={"kafka_bootstrap_servers": bootstrap, "topic_prefix": topics.prefix, "agent_credential": None}
    )
    if trust is not None:  # one process acting for the whole fleet, each agent with its own credential
        gate = ObservedGate(gate_settings, agent_id=agents[0].agent_id, credentials=trust.agents(agents),
                            stats=stats)
    else:
        gate = ObservedGate(gate_settings, agent_id=agents[0].agent_id, agent_role=agents[0].role,
                            stats=stats)
    tools = FleetTools(gate, config.seed)
    async with gate:
        await gate.prepare(*(agent.agent_id for agent in agents))
        await listening.wait()
        in_flight: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        calm_s = config.seconds * CALM_SHARE
        shown = 0.0
        with Live(
            stats.render("sluicegate demo"),
            console=console,
            refresh_per_second=4,
            transient=False,
            auto_refresh=config.live,
        ) as live:
            sent = 0
            while (elapsed := time.monotonic() - started) < config.seconds:
                due = int(elapsed * config.rate) - sent
                rogue = elapsed >= calm_s
                for _ in range(max(due, 0)):
                    stats.offer(time.monotonic())
                    task = asyncio.create_task(tools.call(simulator.next_call(datetime.now(UTC), rogue)))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                    sent += 1
                if elapsed - shown >= VIEW_REFRESH_S:
                    shown = elapsed
                    stats.sample_cpu(time.monotonic())
                    if config.live:
                        phase = "rogues active" if rogue else "calm (history)"
                        live.update(stats.render(f"sluicegate demo  {elapsed:4.0f}/{config.seconds:.0f} s  "
                                                 f"{phase}"))
                await asyncio.sleep(0.01)
            stats.sample_cpu(time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*in_flight), DRAIN_TIMEOUT_S)
            stats.ended(config.seconds)
            live.update(stats.render("sluicegate demo  done"))
        rogue_s = time.monotonic() - started - calm_s
    reviewer_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reviewer_task
    return stats, rogue_s


def _print_audit_report(console: Console, audit_url: str, env: dict[str, str], rogue_s: float) -> None:
    """The audit report over the rogue period; the calm period before it is the agents' history."""
    console.rule("audit report (ClickHouse): the rogue period, against the calm period as history")
    time.sleep(SINK_FLUSH_S)  # the sink stores what it has read at most this long ago
    since = f"{round(rogue_s + SINK_FLUSH_S)}s"
    completed = subprocess.run(
        [sys.executable, "-m", "sluicegate.cli", "audit", "report", "--since", since],
        env={**os.environ, **env, "SLUICEGATE_CLICKHOUSE_URL": audit_url},
        check=False,
    )
    if completed.returncode != 0:
        raise DemoError("the audit report failed (see above)")
