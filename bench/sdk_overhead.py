"""SDK overhead: what ``Gate.check`` and ``@gate.guard`` cost on top of the decision itself.

1. In process, with an instant scripted transport (no broker): the SDK's own CPU per ``check`` and per
   guarded call (intent building and validation, reply routing, outcome building), p50/p99 in µs, with
   trust off and with a credential (``trust_*``: the intent's authenticator, the reply's check and the
   intent digest), and their ratio, in the same run; and each of those trust steps alone (``timeit``,
   best of 5: steadier than the per-call figures on a shared machine).
2. With a real broker and a tiny in-process responder standing in for the worker: the round trip of
   sequential ``check`` calls (p50/p99 ms, trust off and on) and the throughput of one Gate serving 500
   agents concurrently (trust off, and on with one credential per agent).
   Starts its own broker (Kafka ports 19400-19409) unless ``--bootstrap`` is given; ``--no-kafka`` skips.

    .venv/bin/python bench/sdk_overhead.py [--json] [--calls N] [--bootstrap HOST:PORT] [--no-kafka]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.kafka import BrokerConfig, start_broker, stop_broker
from infra.kafka.process import port_is_free
from schemas import Decision, Intent, TopicNames
from sluicegate import AgentCredential, AgentIdentity, Gate, Settings
from sluicegate.routing import ReplyCheck
from sluicegate.trust import KeyRing
from tests.sdk.fakes import FakeTransport, Record, Reply, decision_for, signed
from tests.sdk.kafka_helpers import Responder, create_topics

PORTS = range(19400, 19410)
REFUND: dict[str, Any] = {"tool": "payments.refund", "action": "create", "target": "payments:refunds"}
RING = KeyRing.generate("k1")
AGENTS = [f"agent-{n}" for n in range(500)]
CREDENTIALS = {agent: AgentCredential.issue(RING, agent, "r", "dev") for agent in ["a", *AGENTS]}


def allow(intent: Intent) -> list[Reply]:
    return [decision_for(intent)]


def allow_decision(intent: Intent) -> list[Decision]:
    return [decision_for(intent)]


def allow_signed(intent: Intent) -> list[Record]:
    """An ALLOW as a worker with trust on sends it: authenticated with the agent's key."""
    return [signed(decision_for(intent), CREDENTIALS[intent.agent_id])]


def quantiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49], cuts[98]


async def timed(calls: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


def ratios(figures: dict[str, float], names: list[str]) -> dict[str, float]:
    """``trust_<name>_ratio``: trust on over trust off, for each figure ``name``."""
    return {f"trust_{name}_ratio": figures[f"trust_{name}"] / figures[name] for name in names}


ROUNDS = 10


async def in_process(calls: int) -> dict[str, float]:
    """Trust off and on, interleaved in rounds so both see the same machine load. ``*_cpu_mean_us`` is
    this process's CPU time per call (``time.process_time``: preemption by other processes excluded; the
    scripted responder's work, signing included, is in it), ``*_cpu_p50/p99_us`` the wall time per call."""
    off_settings = Settings(kafka_bootstrap_servers="unused:1", agent_credential=None, trust_off=True)
    off = Gate(off_settings, agent_id="a",
               agent_role="r", environment="dev", transport=FakeTransport(allow))
    on = Gate(Settings(kafka_bootstrap_servers="unused:1"), credential=CREDENTIALS["a"],
              transport=FakeTransport(allow_signed))
    walls: dict[str, list[float]] = {}
    cpu: dict[str, float] = {}
    async with off, on:
        calls_of = {prefix: in_process_calls(gate) for prefix, gate in (("", off), ("trust_", on))}
        for prefix_calls in calls_of.values():
            for call in prefix_calls.values():
                await timed(200, call)  # warm-up
        per_round = max(1, calls // ROUNDS)
        for _ in range(ROUNDS):
            for prefix, prefix_calls in calls_of.items():
                for kind, call in prefix_calls.items():
                    started = time.process_time()
                    walls.setdefault(prefix + kind, []).extend(await timed(per_round, call))
                    cpu[prefix + kind] = cpu.get(prefix + kind, 0.0) + time.process_time() - started
    figures: dict[str, float] = {}
    for name, samples in walls.items():
        p50, p99 = quantiles(samples)
        figures |= {f"{name}_cpu_p50_us": p50 * 1e6, f"{name}_cpu_p99_us": p99 * 1e6,
                    f"{name}_cpu_mean_us": cpu[name] / len(samples) * 1e6}
    return figures | ratios(figures, ["check_cpu_mean_us", "guard_cpu_mean_us", "check_cpu_p50_us"])


def trust_steps() -> dict[str, float]:
    """µs per trust step the SDK adds to a call: identity from the credential, the intent's authenticator,
    its digest, and the check of the reply (header, MAC, agent, digest)."""
    credential = CREDENTIALS["a"]
    gate = Gate(Settings(kafka_bootstrap_servers="unused:1"), credential=credential,
                transport=FakeTransport(allow_signed))
    intent = gate.intent(**REFUND, params={"amount": 5})
    value = intent.model_dump_json().encode()
    reply = allow_signed(intent)[0]
    decision = Decision.model_validate_json(reply.value)
    check = ReplyCheck(credential.key_id, credential.key, intent.digest())
    who = AgentIdentity()
    steps = {
        "identity": lambda: (gate.identities.resolve(who), gate.identities.credential_for(
            intent.agent_id, intent.agent_role, intent.environment, intent.agent_owner)),
        "sign": lambda: credential.authenticate(value),
        "digest": intent.digest,
        "verify": lambda: check.problem(decision, reply.value, reply.headers, intent.agent_id),
    }
    number = 20_000
    figures = {f"trust_{name}_us": min(timeit.repeat(step, number=number, repeat=5)) / number * 1e6
               for name, step in steps.items()}
    return figures | {"trust_steps_us": sum(figures.values())}


def in_process_calls(gate: Gate) -> dict[str, Callable[[], Awaitable[object]]]:
    """A ``check`` and a guarded call on ``gate``."""

    @gate.guard(**REFUND, params=lambda amount: {"amount": amount})
    async def refund(amount: int) -> int:
        return amount

    return {"check": lambda: gate.check(**REFUND, params={"amount": 5}), "guard": lambda: refund(5)}


async def over_kafka(bootstrap: str, calls: int) -> dict[str, float]:
    off = await over_kafka_gate(bootstrap, calls, trust=False)
    on = await over_kafka_gate(bootstrap, calls, trust=True)
    figures = off | {f"trust_{name}": value for name, value in on.items()}
    return figures | ratios(figures, ["roundtrip_p50_ms", "concurrent_checks_per_s"])


async def over_kafka_gate(bootstrap: str, calls: int, *, trust: bool) -> dict[str, float]:
    topics = TopicNames("bench" + secrets.token_hex(4))
    await create_topics(bootstrap, topics, partitions=6)
    settings = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=topics.prefix, agent_credential=None,
                        trust_off=not trust)
    if trust:
        gate = Gate(settings, agent_id="a", credentials=CREDENTIALS)
    else:
        gate = Gate(settings, agent_id="a", agent_role="r", environment="dev")
    async with Responder(bootstrap, topics, allow_signed if trust else allow_decision), gate:
        await timed(100, lambda: gate.check(**REFUND))  # warm-up
        p50, p99 = quantiles(await timed(calls, lambda: gate.check(**REFUND)))
        await gate.prepare(*AGENTS)
        started = time.perf_counter()
        results = await asyncio.gather(*(gate.check(**REFUND, agent_id=a) for a in AGENTS * 4))
        elapsed = time.perf_counter() - started
    blocked = sum(1 for d in results if d.decision.value != "ALLOW")
    return {"roundtrip_p50_ms": p50 * 1e3, "roundtrip_p99_ms": p99 * 1e3,
            "concurrent_checks_per_s": len(results) / elapsed, "concurrent_blocked": blocked}


def start_own_broker(data_dir: Path) -> BrokerConfig:
    port = next(p for p in PORTS if port_is_free("127.0.0.1", p))
    defaults = Settings()
    config = BrokerConfig(port=port, data_dir=data_dir, cache_dir=defaults.artifact_cache_dir.resolve(),
                          version=defaults.kafka_version)
    start_broker(config)
    return config


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--bootstrap", help="an existing broker instead of starting one")
    parser.add_argument("--no-kafka", action="store_true", help="only the in-process figures")
    args = parser.parse_args()
    figures: dict[str, float] = await in_process(args.calls) | trust_steps()
    if not args.no_kafka:
        with tempfile.TemporaryDirectory() as tmp:
            config = None if args.bootstrap else start_own_broker(Path(tmp) / "kafka")
            try:
                bootstrap = args.bootstrap or f"127.0.0.1:{config.port if config else 0}"
                figures |= await over_kafka(bootstrap, args.calls)
            finally:
                if config is not None:
                    stop_broker(config.data_dir)
    rounded = {k: round(v, 2) for k, v in figures.items()}
    print(json.dumps(rounded) if args.json else "\n".join(f"{k:>34}: {v}" for k, v in rounded.items()))


if __name__ == "__main__":
    asyncio.run(main())
