"""SDK overhead: what ``Gate.check`` and ``@gate.guard`` cost on top of the decision itself.

1. In process, with an instant scripted transport (no broker): the SDK's own CPU per ``check`` and per
   guarded call (intent building and validation, reply routing, outcome building), p50/p99 in µs.
2. With a real broker and a tiny in-process responder standing in for the worker: the round trip of
   sequential ``check`` calls (p50/p99 ms) and the throughput of one Gate serving 500 agents concurrently.
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.kafka import BrokerConfig, start_broker, stop_broker
from infra.kafka.process import port_is_free
from schemas import Decision, Intent, TopicNames
from sluicegate import Gate, Settings
from tests.sdk.fakes import FakeTransport, Reply, decision_for
from tests.sdk.kafka_helpers import Responder, create_topics

PORTS = range(19400, 19410)
REFUND: dict[str, Any] = {"tool": "payments.refund", "action": "create", "target": "payments:refunds"}


def allow(intent: Intent) -> list[Reply]:
    return [decision_for(intent)]


def allow_decision(intent: Intent) -> list[Decision]:
    return [decision_for(intent)]


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


async def in_process(calls: int) -> dict[str, float]:
    settings = Settings(kafka_bootstrap_servers="unused:1")
    gate = Gate(settings, agent_id="a", agent_role="r", environment="dev", transport=FakeTransport(allow))
    async with gate:

        @gate.guard(**REFUND, params=lambda amount: {"amount": amount})
        async def refund(amount: int) -> int:
            return amount

        await timed(200, lambda: gate.check(**REFUND))  # warm-up
        checks = await timed(calls, lambda: gate.check(**REFUND, params={"amount": 5}))
        check_p50, check_p99 = quantiles(checks)
        guard_p50, guard_p99 = quantiles(await timed(calls, lambda: refund(5)))
    return {"check_cpu_p50_us": check_p50 * 1e6, "check_cpu_p99_us": check_p99 * 1e6,
            "guard_cpu_p50_us": guard_p50 * 1e6, "guard_cpu_p99_us": guard_p99 * 1e6}


async def over_kafka(bootstrap: str, calls: int) -> dict[str, float]:
    topics = TopicNames("bench" + secrets.token_hex(4))
    await create_topics(bootstrap, topics, partitions=6)
    settings = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=topics.prefix)
    async with Responder(bootstrap, topics, allow_decision), \
            Gate(settings, agent_id="a", agent_role="r", environment="dev") as gate:
        await timed(100, lambda: gate.check(**REFUND))  # warm-up
        p50, p99 = quantiles(await timed(calls, lambda: gate.check(**REFUND)))
        agents = [f"agent-{n}" for n in range(500)]
        await gate.prepare(*agents)
        started = time.perf_counter()
        results = await asyncio.gather(*(gate.check(**REFUND, agent_id=a) for a in agents * 4))
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
    figures: dict[str, float] = await in_process(args.calls)
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
    print(json.dumps(rounded) if args.json else "\n".join(f"{k:>26}: {v}" for k, v in rounded.items()))


if __name__ == "__main__":
    asyncio.run(main())
