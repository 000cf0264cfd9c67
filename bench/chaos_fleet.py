"""One share of the chaos run's fleet, in its own process: its agents call ``Gate.authorize`` at its
rate until told to stop, then it writes what each agent was told.

Why so. One process firing the whole fleet's calls on a clock (a new call every 2 ms whether or not
earlier ones were answered) was the run's bottleneck at 500 intents/s: its SDK producer keeps one batch
per partition filling (16 KiB by aiokafka's default, ~30 signed intents) behind one in flight, so
thousands of calls waited for room in the batch; each batch sent woke every one of them
(``MessageBatch.wait_drain``), the event loop fell seconds behind, a produce round trip took as long,
and the intents reached the broker at ~200 per round trip while the agents timed out (an earlier
500/s run: 23,000 intents on the topic of 233,000 calls, 144,501 ``governance_unavailable`` after
30 s). A fault that held answers back for a few seconds started that spiral and it never recovered.
Here each agent makes one call at a time, as an agent that acts on its answer does (a call slower than
its interval delays the next), and the fleet is split over processes, each with its own producer and
loop, as a real fleet of agent processes would be.

    python bench/chaos_fleet.py CONFIG.json     # started by bench/chaos.py; a line on stdin stops it

``CONFIG.json``: ``bootstrap``, ``prefix``, ``trust`` (the run's key directory), ``agents`` (ids),
``rate``, ``seed``, ``decision_timeout``, ``drain_s`` (how long to wait for the calls in flight once
stopped), ``out`` (where the calls go, a JSON list of :class:`bench.chaos_reconcile.Call`) and ``log``. The
Kafka security settings of the agents' role come from the environment (``SLUICEGATE_KAFKA_*``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.chaos_reconcile import Call  # noqa: E402
from sluicegate.cli.trust import read_keys  # noqa: E402
from sluicegate.demo.fleet import SimulatedAgent  # noqa: E402
from sluicegate.demo.trust import DemoTrust  # noqa: E402
from sluicegate.gate import Gate  # noqa: E402
from sluicegate.identity import AgentIdentity  # noqa: E402
from sluicegate.settings import Settings  # noqa: E402

REFUND, READ, DEPLOY, DROP = "payments.refund", "crm.get_account", "services.deploy", "db.drop_table"
TICK_S = 0.01


def agents(ids: list[str]) -> list[SimulatedAgent]:
    """The simulated agents of these ids, as the chaos policy sees them."""
    return [SimulatedAgent(agent_id, "support", "production", "team-chaos") for agent_id in ids]


def draw(rng: random.Random) -> tuple[str, str, str, dict[str, Any]]:
    """(tool, action, target, params) of the next call."""
    roll = rng.random()
    if roll < 0.45:
        return READ, "read", "crm:accounts", {"account_id": rng.randint(1, 10**6)}
    if roll < 0.9:
        return REFUND, "create", "payments:refunds", {"amount": round(rng.uniform(1.0, 100.0), 2)}
    if roll < 0.97:
        return DROP, "delete", "db:prod", {}
    return DEPLOY, "execute", "services:checkout", {"version": "1.0.0"}


async def _call(gate: Gate, agent: SimulatedAgent, drawn: tuple[str, str, str, dict[str, Any]],
                calls: list[Call]) -> None:
    tool, action, target, params = drawn
    now = datetime.now(UTC)
    intent = gate.intent(tool=tool, action=action, target=target, params=params, occurred_at=now,
                         agent=AgentIdentity(agent.agent_id, agent.role, agent.environment, agent.owner))
    call = Call(str(intent.request_id), agent.agent_id, tool, float(params.get("amount", 0.0)),
                int(now.timestamp() * 1000), time.monotonic())  # CLOCK_MONOTONIC: the same in every process
    calls.append(call)
    auth = await gate.authorize(intent)
    call.latency_ms = (time.monotonic() - call.started) * 1000
    call.answers += 1
    call.verdict = auth.decision.decision.value
    call.unavailable, call.approval = auth.unavailable, auth.pending is not None


async def _agent(gate: Gate, agent: SimulatedAgent, rate: float, seed: int, calls: list[Call],
                 stop: asyncio.Future[Any]) -> None:
    """One agent: a call every ``1 / rate`` s, one at a time (an agent acts on its answer before it
    asks again); a call that takes longer delays the next, it does not pile more on the SDK."""
    rng = random.Random(f"{seed}:{agent.agent_id}")
    interval = 1.0 / rate
    next_at = time.monotonic() + rng.uniform(0.0, interval)
    while not stop.done():
        await asyncio.wait([stop], timeout=max(0.0, next_at - time.monotonic()))
        if stop.done():
            return
        await _call(gate, agent, draw(rng), calls)
        next_at = max(next_at + interval, time.monotonic())


async def drive(config: dict[str, Any], stop: asyncio.Future[Any]) -> list[Call]:
    """The calls of this share's agents at its rate until ``stop`` is done; then the calls in flight,
    for at most ``drain_s``."""
    fleet = agents(config["agents"])
    trust_dir = Path(config["trust"])
    trust = DemoTrust(trust_dir, read_keys(str(trust_dir)))
    settings = Settings().model_copy(update={
        "kafka_bootstrap_servers": config["bootstrap"], "topic_prefix": config["prefix"],
        "agent_credential": None, "decision_timeout_s": config["decision_timeout"]})
    gate = Gate(settings, agent_id=fleet[0].agent_id, credentials=trust.agents(fleet))
    calls: list[Call] = []
    async with gate:
        await gate.prepare(*(agent.agent_id for agent in fleet))
        tasks = [asyncio.create_task(_agent(gate, agent, config["rate"] / len(fleet), config["seed"], calls,
                                             stop))
                 for agent in fleet]
        await asyncio.wait([stop])
        _, late = await asyncio.wait(tasks, timeout=config["drain_s"])
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return calls


async def _main(config: dict[str, Any]) -> None:
    stop = asyncio.ensure_future(asyncio.to_thread(sys.stdin.readline))  # a line, or the run ending
    calls = await drive(config, stop)
    Path(config["out"]).write_text(json.dumps([dataclasses.asdict(call) for call in calls]))


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[0]).read_text())
    logging.basicConfig(filename=config["log"], level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(config))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
