"""How cost grows, for one worker: three curves, each beside its floor, plotted as PNGs.

1. **Rules.** Evaluation time per intent (p50/p99 µs, through the engine's one entry, ``evaluate_raw``,
   with a worker's context) against policies of 10 to 10,000 generated rules, in two shapes: a fleet
   of at most 100 tools (rules per tool grow with the policy: the index's worst case) and 10 rules
   per tool (tools grow with the policy). The floor, ``json.loads`` of the same intents, is timed in
   the same run, alternating passes with the engine; the plot shows the ratio to it.
2. **State.** For 1,000 to 1,000,000 active agent-keyed windows (values written by the worker's own
   :class:`~streams.state.table_state.TableState`): the changelog's bytes (payload, and the broker's
   log segments when this run started the broker), the time :meth:`ChangelogStore.restore` takes to
   rebuild them into empty RocksDB databases, and those databases' bytes on disk.
3. **Load.** Latency (p50/p99, intent published -> decision received) against offered intents/s
   through one real worker (:mod:`bench.e2e`'s worker and load generator), rising until the worker
   answers fewer than :data:`SATURATED` of the offered intents per second, and the echo floor
   (:mod:`bench.floors`) at the same rates, alternating with the worker at every step.

Every curve carries the machine's 1-minute load average when it was measured (JSON and plot titles).
``run(out_dir, quick)`` returns the figures as a JSON-serialisable dict and writes ``rules.png``,
``state.png``, ``load.png`` and ``cost_curves.json`` into ``out_dir``; ``quick`` uses tiny sizes.
Uses ``KAFKA_BOOTSTRAP_SERVERS``, else starts a throwaway local broker.

    python bench/cost_curves.py --out docs/img [--quick] [--json] [--only rules,state,load]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import thread_time_ns
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402
import matplotlib.ticker  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402

from bench.broker import bootstrap_servers  # noqa: E402
from bench.e2e import (  # noqa: E402
    Client,
    ProcStats,
    Responder,
    shape_of,
    start_floor,
    start_worker,
    terminating,
    written,
)
from bench.floors import Shape, floor_topics  # noqa: E402
from infra.kafka.admin import TopicSpec, ensure_topics  # noqa: E402
from schemas import DecisionKind  # noqa: E402
from schemas.policy import PolicyDocument, check_document  # noqa: E402
from streams.engine import (  # noqa: E402
    AGENT_SCOPES,
    CompiledPolicy,
    Context,
    InMemoryState,
    LimitScope,
    WindowChange,
    apply,
    compile_policy,
    evaluate_raw,
)
from streams.engine.loader import MAX_POLICY_BYTES  # noqa: E402
from streams.state.changelog_store import ChangelogStore  # noqa: E402
from streams.state.table_state import TableState  # noqa: E402
from streams.topology import COMPACTED  # noqa: E402

RULE_SIZES, QUICK_RULE_SIZES = (10, 100, 1_000, 10_000), (10, 100, 3_000)
KEY_SIZES, QUICK_KEY_SIZES = (1_000, 10_000, 100_000, 1_000_000), (200, 2_000)
RATES = (100, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 4_000, 6_000, 8_000)
QUICK_RATES = (100, 200)
SHAPES = {"fleet of 100 tools": 100, "10 rules per tool": 0}
"""Rules-curve shapes: at most this many tools (rules per tool grow), or 0: tools = rules / 10."""
SATURATED = 0.9
"""A step whose answered rate is below this share of the published rate is saturation: the last step."""
STATE_BUDGET_S = 420.0
"""A state point whose expected time (the previous point's, scaled) is over this is extrapolated."""
PARTITIONS = 6
SERVICES = ["payments", "crm", "tickets", "db", "services", "instances", "iam", "logs", "metrics", "files"]
VERBS = ["get", "list", "create", "update", "delete", "refund", "export", "scale", "query", "sync"]
ACTIONS = ["read", "create", "update", "delete", "execute"]
ENVS = ["dev", "staging", "production"]
ROLES = ["support", "devops", "finance", "analyst", "ops"]


def load() -> float:
    """The 1-minute load average."""
    return round(os.getloadavg()[0], 2)


def machine() -> dict[str, Any]:
    """Cores, RAM and software of this machine."""
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {"cpus": os.cpu_count(), "ram_gb": round(pages / 2**30, 1), "python": sys.version.split()[0],
            "platform": platform.platform(), "cpu": _cpu_model()}


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nan when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- 1. evaluation time against rules -----------------------------------------------------------------


def tool_names(count: int) -> list[str]:
    """``count`` distinct tool names: ``payments.get`` ... then ``payments2.get`` ... ."""
    return [f"{SERVICES[(i // 10) % 10]}{i // 100 or ''}.{VERBS[i % 10]}" for i in range(count)]


def rule_lines(index: int, tool: str, tool_index: int, nth: int) -> list[str]:
    """The ``nth`` rule of ``tool`` (one line): the first grants its usual action and reads up to an
    amount; the others refine it (conditions on amounts, counts, environment, schedule, region, role;
    every decision), and one in ten is a service-wide glob (the index's fallback list)."""
    service = tool.split(".")[0]
    head = f"  - {{id: rule-{index}, "
    if nth == 0:
        return [head + f"match: {{tool: {tool}, action: [{ACTIONS[tool_index % 5]}, read]}}, "
                "when: {field: params.amount, op: lte, value: 1000, default: 0}, decision: ALLOW}"]
    kind = index % 10
    if kind == 9:
        return [head + f"match: {{tool: '{service}.*', action: delete, environment: production}}, "
                "decision: BLOCK}"]
    target = f"{service}:t{nth % 4}" if nth % 4 == 3 else f"'{service}:*'"
    amount = 50 * (1 + nth % 10)
    when = {
        0: f"{{field: params.amount, op: lte, value: {amount}}}",
        1: f"{{all: [{{field: params.amount, op: gt, value: {amount}}}, "
           f"{{field: params.amount, op: lte, value: {amount * 20}}}]}}",
        2: "{field: params.record_count, op: gte, value: 100, default: 1}",
        3: f"{{field: environment, op: in, value: [{ENVS[nth % 2]}, staging]}}",
        4: "{not: {schedule: business_hours}}",
        5: f"{{field: params.region, op: regex, value: '^eu-{1 + nth % 3}'}}",
        6: f"{{any: [{{field: agent_role, op: eq, value: {ROLES[nth % 5]}}}, "
           f"{{field: params.amount, op: lt, value: {amount // 5}}}]}}",
        7: f"{{field: params.amount, op: gt, value: {amount * 40}}}",
        8: f"{{field: agent_role, op: in, value: [{ROLES[nth % 5]}, {ROLES[(nth + 1) % 5]}]}}",
    }[kind]
    decision = {1: "REQUIRE_APPROVAL", 2: "REQUIRE_APPROVAL", 4: "REQUIRE_APPROVAL", 7: "BLOCK"}.get(
        kind, "ALLOW")
    return [head + f"match: {{tool: {tool}, action: [{ACTIONS[tool_index % 5]}, read], target: {target}}}, "
            f"when: {when}, decision: {decision}}}"]


def rules_policy(rules: int, max_tools: int) -> tuple[str, list[str]]:
    """A policy of ``rules`` rules over its tools (at most ``max_tools``, or 0: one per 10 rules), 4
    agent-keyed limits plus one per-tool limit per 100 rules, and a risk model; and its tools."""
    count = min(rules, max_tools) if max_tools else max(1, rules // 10)
    tools = tool_names(count)
    lines = ["policy: cost-curve", "default: BLOCK", "schedules:",
             "  business_hours: {timezone: Europe/Paris, days: [mon, tue, wed, thu, fri], "
             "start: '09:00', end: '18:00'}", "rules:"]
    for index in range(rules):
        lines += rule_lines(index, tools[index % count], index % count, index // count)
    lines += [
        "limits:",
        "  - {id: per-agent-hour, key: agent, window: 1h, count: 50}",
        "  - {id: per-agent-minute, key: agent, window: 1m, count: 20}",
        "  - {id: agent-spend-day, key: agent, window: 24h, sum: params.amount, max: 50000,"
        " match: {tool: 'payments*.*'}}",
        "  - {id: writes-per-tool, key: [agent, tool], window: 10m, count: 30,"
        " match: {action: [create, update, delete]}}",
    ]
    lines += [f"  - {{id: tool-limit-{n}, key: agent, window: 10m, count: 100, "
              f"match: {{tool: {tools[n % count]}}}}}" for n in range(rules // 100)]
    lines += [
        "risk:",
        "  action_weights: {read: 0.0, create: 0.05, update: 0.05, delete: 0.2, execute: 0.1}",
        "  target_sensitivity: [{target: 'payments*:*', weight: 0.1}, {target: 'iam*:*', weight: 0.3}]",
        "  magnitude: [{field: params.amount, scale: 5000, weight: 0.1}]",
        "  history: {min_observations: 10, amount: {field: params.amount, z: 3.0, weight: 0.6},"
        " new_target: {weight: 0.35}, unusual_hour: {weight: 0.3},"
        " burst: {window: 1m, ratio: 10, weight: 0.6}}",
        "  thresholds: [{at_least: 0.9, decision: BLOCK}, {at_least: 0.6, decision: REQUIRE_APPROVAL}]",
    ]
    return "\n".join(lines) + "\n", tools


def rule_intents(tools: list[str], count: int, agents: int = 1_000) -> list[bytes]:
    """Intents of ``agents`` agents over one day, each agent using 2-4 of ``tools`` with its usual action
    (85%), targets, amounts around its own mean, sometimes a record count or a region."""
    rng = random.Random(42)
    profiles = [(f"agent-{i:04d}", rng.choice(ROLES), rng.choice(ENVS),
                 rng.sample(range(len(tools)), min(len(tools), rng.randint(2, 4))), rng.uniform(5, 200))
                for i in range(agents)]
    start = datetime(2025, 3, 3, tzinfo=UTC)
    out = []
    for index in range(count):
        agent, role, env, used, usual = profiles[rng.randrange(agents)]
        tool_index = rng.choice(used)
        tool = tools[tool_index]
        action = ACTIONS[tool_index % 5] if rng.random() < 0.85 else rng.choice(ACTIONS)
        params: dict[str, Any] = {"amount": round(abs(rng.gauss(usual, usual / 3)), 2)}
        if rng.random() < 0.3:
            params["record_count"] = rng.randint(1, 300)
        if rng.random() < 0.3:
            params["region"] = rng.choice(["eu-1", "eu-2", "eu-3", "us-1"])
        at = start + timedelta(milliseconds=index * 86_400_000 // count)
        out.append(json.dumps({
            "request_id": str(uuid.UUID(int=rng.getrandbits(128))), "agent_id": agent, "agent_role": role,
            "environment": env, "tool": tool, "action": action,
            "target": f"{tool.split('.')[0]}:t{rng.randrange(4)}", "params": params,
            "occurred_at": at.isoformat().replace("+00:00", "Z"),
        }).encode())
    return out


def compiled(text: str, source: str) -> CompiledPolicy:
    """``text`` compiled as a worker would; a policy over the publishable size (:data:`MAX_POLICY_BYTES`)
    is validated and compiled the same way, only not size-checked (the curve goes past the limit)."""
    if len(text.encode()) <= MAX_POLICY_BYTES:
        return compile_policy(text, source)
    doc = PolicyDocument.model_validate(yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    problems = check_document(doc)
    if problems:
        raise ValueError(f"{source}: {problems[:3]}")
    return CompiledPolicy(doc, source)


def clock_overhead_ns() -> int:
    """The median cost of one read of the thread's CPU clock (subtracted from every timing)."""
    deltas = []
    for _ in range(2_000):
        began = thread_time_ns()
        deltas.append(thread_time_ns() - began)
    return int(statistics.median(deltas))


def _engine_pass(policy: Any, raw: list[bytes]) -> tuple[list[int], dict[str, int], float]:
    """``evaluate_raw`` over ``raw`` from empty state, as a worker calls it: sorted ns per intent, the
    decisions, and the mean number of rules, limits and thresholds that applied per intent."""
    state = InMemoryState()
    times: list[int] = []
    kinds = dict.fromkeys((kind.value for kind in DecisionKind), 0)
    applied = 0
    gc.collect()
    gc.freeze()
    for body in raw:
        arrived = json.loads(body)["occurred_at"]
        arrived_ms = int(datetime.fromisoformat(arrived).timestamp() * 1000) + 50
        context = Context(arrived_ms + 1000, arrived_ms, 300_000, AGENT_SCOPES)
        began = thread_time_ns()
        result = evaluate_raw(policy, state, body, context)
        times.append(thread_time_ns() - began)
        decision = result.decision
        kinds[decision.decision.value] += 1
        applied += len(decision.rules)
        if decision.decision is DecisionKind.ALLOW:
            apply(state, result.changes)
    gc.unfreeze()
    times.sort()
    return times, kinds, applied / len(raw)


def _parse_pass(raw: list[bytes]) -> list[int]:
    """The floor: ``json.loads`` of each intent, sorted ns."""
    times = []
    gc.collect()
    gc.freeze()
    for body in raw:
        began = thread_time_ns()
        json.loads(body)
        times.append(thread_time_ns() - began)
    gc.unfreeze()
    times.sort()
    return times


def rules_point(rules: int, max_tools: int, intents: int, repeat: int) -> dict[str, Any]:
    """One point: after a warm-up pass, the engine and the floor alternating ``repeat`` times; the pass
    with the best p50 of each, in thread CPU time less the clock's own overhead."""
    text, tools = rules_policy(rules, max_tools)
    began = time.perf_counter()
    policy = compiled(text, f"cost-{rules}.yaml")
    compile_s = time.perf_counter() - began
    raw = rule_intents(tools, intents)
    _engine_pass(policy, raw)  # warm: the policy's plans per (tool, action) are memoised, as in a worker
    engine_runs, floor_runs = [], []
    for _ in range(repeat):
        engine_runs.append(_engine_pass(policy, raw))
        floor_runs.append(_parse_pass(raw))
    overhead = clock_overhead_ns()
    times, kinds, applied = min(engine_runs, key=lambda run: pct(run[0], 0.5))
    floor = min(floor_runs, key=lambda run: pct(run, 0.5))
    p50, p99 = ((pct(times, q) - overhead) / 1000 for q in (0.5, 0.99))
    floor_p50, floor_p99 = ((pct(floor, q) - overhead) / 1000 for q in (0.5, 0.99))
    limits = sum(1 for limit in policy.limits if limit.scope is LimitScope.AGENT)
    return {"rules": rules, "tools": len(tools), "rules_per_tool": round(rules / len(tools), 1),
            "limits": limits, "policy_bytes": len(text.encode()),
            "publishable": len(text.encode()) <= MAX_POLICY_BYTES, "compile_s": round(compile_s, 2),
            "p50_us": round(p50, 2), "p99_us": round(p99, 2),
            "floor_p50_us": round(floor_p50, 2), "floor_p99_us": round(floor_p99, 2),
            "p50_vs_floor": round(p50 / floor_p50, 2), "p99_vs_floor": round(p99 / floor_p99, 2),
            "clock_overhead_us": round(overhead / 1000, 2),
            "applied_per_intent": round(applied, 2), "decisions": kinds, "load": load()}


def rules_curve(quick: bool) -> dict[str, Any]:
    """Evaluation time against rules, per policy shape."""
    sizes = QUICK_RULE_SIZES if quick else RULE_SIZES
    intents, repeat = (1_500, 1) if quick else (20_000, 3)
    started = load()
    shapes = {name: [rules_point(rules, max_tools, intents, repeat) for rules in sizes]
              for name, max_tools in SHAPES.items()}
    return {"intents": intents, "repeat": repeat, "load_at_start": started, "load_at_end": load(),
            "floor": "json.loads of the same intent bytes", "clock": "thread CPU time, less one clock read",
            "max_policy_bytes": MAX_POLICY_BYTES, "shapes": shapes}


# -- 2. state bytes and restore time against active keys ----------------------------------------------


def window_values(count: int, rng: random.Random) -> list[bytes]:
    """``count`` agent-keyed window values as the worker writes them (``TableState.add_once``): a count
    or a sum window of an agent that acted 1-6 times in the last hour (tokens included)."""
    values = []
    now = 1_767_600_000_000
    for index in range(count):
        table: dict[str, bytes] = {}
        state = TableState(table)
        amount = index % 2 == 0
        for _ in range(rng.randint(1, 6)):
            at = now - rng.randrange(3_600_000)
            change = WindowChange("limit", LimitScope.AGENT, "k", at,
                                  round(rng.uniform(1, 500), 2) if amount else None, 3_600_000, None)
            state.add_once(change, uuid.UUID(int=rng.getrandbits(128)))
        values.append(table["w|k"])
    return values


def state_records(keys: int) -> Iterator[tuple[bytes, bytes, int]]:
    """(key, value, partition) of ``keys`` active agent windows: two limits per agent, the values
    drawn from 4,096 written by the worker's code (their sizes and content are what matter here)."""
    rng = random.Random(7)
    values = window_values(min(keys, 4_096), rng)
    for index in range(keys):
        agent, limit = divmod(index, 2)
        key = f"w|{('per-agent-hour', 'agent-spend-day')[limit]}|agent=agent-{agent:07d}".encode()
        yield key, values[index % len(values)], agent % PARTITIONS


async def fill(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes, int]]) -> int:
    """Produce ``records`` to ``topic``; their key and value bytes."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    payload = 0
    try:
        for key, value, partition in records:
            await producer.send(topic, value, key=key, partition=partition)
            payload += len(key) + len(value)
        await producer.flush()
    finally:
        await producer.stop()
    return payload


def tree_bytes(path: Path, pattern: str = "*") -> int:
    """Bytes of the files under ``path`` matching ``pattern`` (RocksDB's text logs, ``LOG*``, aside)."""
    return sum(f.stat().st_size for f in path.rglob(pattern) if f.is_file() and not f.name.startswith("LOG"))


def segment_bytes(broker_dir: Path | None, topic: str) -> int | None:
    """Bytes of ``topic``'s log segments on the broker's disk (None: not this run's broker)."""
    if broker_dir is None:
        return None
    return sum(tree_bytes(d, "*.log") for d in broker_dir.rglob(f"{topic}-*") if d.is_dir())


async def state_point(bootstrap: str, workdir: Path, broker_dir: Path | None, keys: int) -> dict[str, Any]:
    """One point: fill a changelog with ``keys`` windows, restore it into empty databases, measure."""
    topic = f"cost{secrets.token_hex(4)}-worker-agent-state-changelog"
    await ensure_topics(bootstrap, [TopicSpec(topic, PARTITIONS, configs=dict(COMPACTED))])
    began = time.perf_counter()
    payload = await fill(bootstrap, topic, state_records(keys))
    fill_s = time.perf_counter() - began
    directory = workdir / f"store-{keys}"
    restorer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await restorer.start()
    try:
        store = ChangelogStore(directory, topic)
        load_before = load()
        began = time.perf_counter()
        applied = await store.restore(restorer, list(range(PARTITIONS)))
        restore_s = time.perf_counter() - began
        store.close_all()
    finally:
        await restorer.stop()
    figures = {"keys": keys, "applied": applied, "changelog_payload_bytes": payload,
               "changelog_segment_bytes": segment_bytes(broker_dir, topic),
               "rocksdb_bytes": tree_bytes(directory), "restore_s": round(restore_s, 3),
               "restore_keys_per_s": int(applied / restore_s), "fill_s": round(fill_s, 2),
               "load": [load_before, load()], "extrapolated": False}
    shutil.rmtree(directory, ignore_errors=True)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()
    return figures


def extrapolated(last: dict[str, Any], keys: int) -> dict[str, Any]:
    """A point not measured: ``last`` scaled linearly to ``keys`` (marked as such)."""
    scale = keys / last["keys"]
    point = {name: (round(value * scale, 3) if isinstance(value, int | float) and not isinstance(value, bool)
                    and name not in ("restore_keys_per_s",) else value) for name, value in last.items()}
    return point | {"keys": keys, "applied": None, "load": None, "extrapolated": True}


async def state_curve(bootstrap: str, workdir: Path, broker_dir: Path | None, quick: bool) -> dict[str, Any]:
    """State bytes and restore time against active keys."""
    started = load()
    points: list[dict[str, Any]] = []
    for keys in QUICK_KEY_SIZES if quick else KEY_SIZES:
        last = points[-1] if points else None
        if last and (last["fill_s"] + last["restore_s"]) * keys / last["keys"] > STATE_BUDGET_S:
            points.append(extrapolated(last, keys))
            continue
        points.append(await state_point(bootstrap, workdir, broker_dir, keys))
    return {"partitions": PARTITIONS, "load_at_start": started, "load_at_end": load(), "points": points}


# -- 3. latency against offered load ------------------------------------------------------------------


async def step(client: Client, responder: Responder, rate: int, seconds: float) -> dict[str, Any]:
    """Offer ``rate`` intents/s for ``seconds`` to ``responder``; wait for its answers; its figures
    (``answered_per_s``: decisions per second from the first to the last received)."""
    cpu0, load0 = responder.cpu_s(), load()
    began = time.perf_counter()
    ids = await client.paced(responder, rate, seconds)
    offered_s = time.perf_counter() - began
    await client.wait_all(ids, 30 + 2 * seconds)
    tracker = client.tracker
    latencies = tracker.latencies_ms(ids)
    answered = sorted(tracker.received[i] for i in ids if i in tracker.received)
    span = answered[-1] - answered[0] if len(answered) > 1 else float("inf")
    return {"offered_per_s": rate, "published_per_s": round(len(ids) / offered_s),
            "answered_per_s": round((len(answered) - 1) / span), "sent": len(ids), "answered": len(answered),
            "p50_ms": round(pct(latencies, 0.5), 2), "p99_ms": round(pct(latencies, 0.99), 2),
            "us_per_intent": round(1e6 * (responder.cpu_s() - cpu0) / len(ids)), "load": [load0, load()]}


async def load_curve(bootstrap: str, workdir: Path, quick: bool) -> dict[str, Any]:
    """One worker and the echo floor at rising offered rates, alternating, until the worker saturates."""
    args = argparse.Namespace(policy="customer_support.yaml", partitions=PARTITIONS)
    seconds = 1.0 if quick else 4.0
    procs: list[Any] = []
    with terminating(procs):
        worker = await start_worker(args, bootstrap, workdir / "worker", "worker", None)
        procs.append(worker.proc)
        prefix = "floor" + secrets.token_hex(4)
        await ensure_topics(bootstrap, floor_topics(prefix, PARTITIONS)[2])
        client = Client(bootstrap)
        await client.start([worker.names.decisions, floor_topics(prefix, PARTITIONS)[0].decisions])
        try:
            await client.warm(worker)
            decision_bytes = shape_of(worker, await written(bootstrap, worker)).decision_bytes
            echo = start_floor(args, bootstrap, workdir, prefix, "echo", Shape(decision_bytes))
            procs.append(echo.proc)
            await client.warm(echo)
            started = load()
            steps: list[dict[str, Any]] = []
            for index, rate in enumerate(QUICK_RATES if quick else RATES):
                order = [worker, echo] if index % 2 == 0 else [echo, worker]
                figures = {r.name: await step(client, r, rate, seconds) for r in order}
                mine, floor = figures["worker"], figures["floor_echo"]
                steps.append({"offered_per_s": rate, "worker": mine, "echo": floor,
                              "p50_vs_floor": _ratio(mine["p50_ms"], floor["p50_ms"]),
                              "p99_vs_floor": _ratio(mine["p99_ms"], floor["p99_ms"])})
                if _saturated(steps[-1]):
                    break
            rss = ProcStats(worker.proc.pid).rss_mb()
        finally:
            await client.stop()
    saturated = [s["offered_per_s"] for s in steps if _saturated(s)]
    return {"policy": args.policy, "partitions": PARTITIONS, "seconds_per_step": seconds,
            "decision_bytes": decision_bytes, "load_at_start": started, "load_at_end": load(),
            "saturated_at_per_s": saturated[0] if saturated else None,
            "max_answered_per_s": max(s["worker"]["answered_per_s"] for s in steps),
            "worker_rss_mb": round(rss, 1), "steps": steps}


def _saturated(step: dict[str, Any]) -> bool:
    """The worker answered fewer than :data:`SATURATED` of what was published per second, or the load
    generator could not publish that share of the offered rate (the curve ends there either way)."""
    worker = step["worker"]
    return bool(worker["answered_per_s"] < SATURATED * worker["published_per_s"]
                or worker["published_per_s"] < SATURATED * step["offered_per_s"])


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 2) if denominator else None


# -- plots ----------------------------------------------------------------------------------------------


def _number(value: float, _: int = 0) -> str:
    return f"{value:,.0f}" if value >= 1 and value == int(value) else f"{value:.3g}"


def _minor(value: float, _: int = 0) -> str:
    return _number(value) if f"{value:e}"[0] in "25" else ""


def _plain(*axes: Any) -> None:
    """Tick labels as plain numbers (10, 1,000, 0.5), not powers of ten; minor ones at 2 and 5."""
    for each in axes:
        for axis in (each.xaxis, each.yaxis):
            axis.set_major_formatter(matplotlib.ticker.FuncFormatter(_number))
            axis.set_minor_formatter(matplotlib.ticker.FuncFormatter(_minor))


def _caption(curve: dict[str, Any], cores: int | None) -> str:
    return f"{cores} cores, load average {curve['load_at_start']}-{curve['load_at_end']} (1 min)"


def plot_rules(curve: dict[str, Any], path: Path, cores: int | None) -> None:
    """Evaluation µs against rules (log-log) and the ratio to the floor."""
    fig, (times, ratios) = plt.subplots(1, 2, figsize=(11, 4.5))
    for (name, points), colour in zip(curve["shapes"].items(), ("tab:blue", "tab:green"), strict=False):
        rules = [p["rules"] for p in points]
        times.plot(rules, [p["p50_us"] for p in points], "o-", color=colour, label=f"p50, {name}")
        times.plot(rules, [p["p99_us"] for p in points], "o--", color=colour, alpha=0.6, label=f"p99, {name}")
        ratios.plot(rules, [p["p50_vs_floor"] for p in points], "o-", color=colour, label=f"p50, {name}")
        ratios.plot(rules, [p["p99_vs_floor"] for p in points], "o--", color=colour, alpha=0.6,
                    label=f"p99, {name}")
    first = next(iter(curve["shapes"].values()))
    times.plot([p["rules"] for p in first], [p["floor_p50_us"] for p in first], "s:", color="grey",
               label="floor p50: json.loads")
    largest = max(first, key=lambda p: p["rules"])
    limit = curve["max_policy_bytes"] * largest["rules"] / largest["policy_bytes"]
    if limit < largest["rules"]:
        for axes in (times, ratios):
            axes.axvline(limit, color="tab:red", linestyle=":", alpha=0.7,
                         label=f"{curve['max_policy_bytes'] // 2**20} MiB policy limit (~{limit:,.0f} rules)")
    times.set(xscale="log", yscale="log", xlabel="rules in the policy", ylabel="µs per intent",
              title="evaluate_raw per intent")
    ratios.set(xscale="log", yscale="log", xlabel="rules in the policy", ylabel="x floor (json.loads)",
               title="ratio to the floor")
    _plain(times, ratios)
    for axes in (times, ratios):
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=7)
    fig.suptitle(f"Evaluation time against rules ({curve['intents']:,} intents, one thread; "
                 f"{_caption(curve, cores)})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_state(curve: dict[str, Any], path: Path, cores: int | None) -> None:
    """Bytes and restore time against active keys (log-log); extrapolated points hollow."""
    points = curve["points"]
    keys = [p["keys"] for p in points]
    fig, (size, restore) = plt.subplots(1, 2, figsize=(11, 4.5))
    series = [("changelog_payload_bytes", "changelog payload (key + value)"),
              ("changelog_segment_bytes", "changelog segments on the broker"),
              ("rocksdb_bytes", "RocksDB on disk after restore")]
    for name, label in series:
        shown = [(k, p[name]) for k, p in zip(keys, points, strict=True) if p[name] is not None]
        if shown:
            size.plot([k for k, _ in shown], [v / 2**20 for _, v in shown], "o-", label=label)
    restore.plot(keys, [p["restore_s"] for p in points], "o-", color="tab:red", label="full restore")
    guessed = [p for p in points if p["extrapolated"]]
    if guessed:
        restore.plot([p["keys"] for p in guessed], [p["restore_s"] for p in guessed], "o", mfc="white",
                     color="tab:red", label="extrapolated (not measured)")
    size.set(xscale="log", yscale="log", xlabel="active agent-keyed windows", ylabel="MiB",
             title="state bytes")
    restore.set(xscale="log", yscale="log", xlabel="active agent-keyed windows", ylabel="seconds",
                title=f"restore into empty RocksDB ({curve['partitions']} partitions)")
    _plain(size, restore)
    for axes in (size, restore):
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=7)
    fig.suptitle(f"State against active keys ({_caption(curve, cores)})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_load(curve: dict[str, Any], path: Path, cores: int | None) -> None:
    """Latency against offered load, worker and echo floor, and the worker's ratio to the floor."""
    steps = curve["steps"]
    rates = [s["offered_per_s"] for s in steps]
    fig, (latency, ratios) = plt.subplots(1, 2, figsize=(11, 4.5))
    for who, colour in (("worker", "tab:blue"), ("echo", "grey")):
        label = "one worker" if who == "worker" else "floor: echo responder"
        latency.plot(rates, [s[who]["p50_ms"] for s in steps], "o-", color=colour, label=f"p50, {label}")
        latency.plot(rates, [s[who]["p99_ms"] for s in steps], "o--", color=colour, alpha=0.6,
                     label=f"p99, {label}")
    ratios.plot(rates, [s["p50_vs_floor"] for s in steps], "o-", label="p50 worker / echo")
    ratios.plot(rates, [s["p99_vs_floor"] for s in steps], "o--", label="p99 worker / echo")
    answered = ratios.twinx()
    answered.plot(rates, [s["worker"]["answered_per_s"] / s["offered_per_s"] for s in steps], "^:",
                  color="tab:red", label="worker answered / offered")
    answered.set_ylabel("answered / offered", color="tab:red")
    answered.set_ylim(0, 1.1)
    answered.legend(fontsize=7, loc="lower left")
    latency.set(xscale="log", yscale="log", xlabel="offered intents/s", ylabel="ms (published → decision)",
                title=f"latency ({curve['policy']}, {curve['partitions']} partitions)")
    ratios.set(xscale="log", yscale="log", xlabel="offered intents/s", ylabel="x floor",
               title="ratio to the floor")
    _plain(latency, ratios)
    for axes in (latency, ratios):
        axes.grid(True, which="both", alpha=0.3)
    latency.legend(fontsize=7)
    ratios.legend(fontsize=7, loc="upper left")
    saturated = curve["saturated_at_per_s"]
    fig.suptitle(f"Latency against offered load, one worker (saturated at {saturated or 'none reached'}/s; "
                 f"{_caption(curve, cores)})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- entry points --------------------------------------------------------------------------------------


def run(out_dir: Path, quick: bool, only: Iterable[str] = ("rules", "state", "load")) -> dict[str, Any]:
    """Measure the curves in ``only``, write their PNGs and ``cost_curves.json`` into ``out_dir``, and
    return the figures (JSON-serialisable). ``quick``: tiny sizes (a smoke run). The curves not in
    ``only`` are kept from an earlier ``cost_curves.json`` there (of the same ``quick``), if any."""
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = set(only)
    figures = _earlier(out_dir / "cost_curves.json", quick, wanted)
    figures |= {"machine": machine(), "quick": quick}
    figures.setdefault("plots", {})
    cores = figures["machine"]["cpus"]
    if "rules" in wanted:
        figures["rules"] = _stamped(rules_curve, quick)
        plot_rules(figures["rules"], out_dir / "rules.png", cores)
        figures["plots"]["rules"] = "rules.png"
    if wanted & {"state", "load"}:
        figures |= asyncio.run(_kafka_curves(wanted, quick))
        if "state" in figures:
            plot_state(figures["state"], out_dir / "state.png", cores)
            figures["plots"]["state"] = "state.png"
        if "load" in figures:
            plot_load(figures["load"], out_dir / "load.png", cores)
            figures["plots"]["load"] = "load.png"
    (out_dir / "cost_curves.json").write_text(json.dumps(figures, indent=1) + "\n")
    return figures


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _stamped(measure: Callable[[bool], dict[str, Any]], quick: bool) -> dict[str, Any]:
    """``measure(quick)`` with the UTC times it started and finished."""
    began = _now()
    return {"started_at": began} | measure(quick) | {"finished_at": _now()}


def _earlier(path: Path, quick: bool, wanted: set[str]) -> dict[str, Any]:
    """The curves of an earlier run at ``path`` that are not measured again (none: a fresh dict)."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if earlier.get("quick") != quick:
        return {}
    kept = {name: earlier[name] for name in ("rules", "state", "load")
            if name in earlier and name not in wanted}
    return kept | {"plots": {name: plot for name, plot in earlier.get("plots", {}).items() if name in kept}}


async def _kafka_curves(wanted: set[str], quick: bool) -> dict[str, Any]:
    """The curves that need a broker (``KAFKA_BOOTSTRAP_SERVERS``, else a throwaway local one)."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sluicegate-cost-") as tmp, \
            bootstrap_servers(given, Path(tmp)) as bootstrap:
        workdir = Path(tmp)
        broker_dir = None if given else workdir / "kafka"
        if "state" in wanted:
            began = _now()
            out["state"] = {"started_at": began} | await state_curve(bootstrap, workdir, broker_dir, quick)
            out["state"]["finished_at"] = _now()
        if "load" in wanted:
            began = _now()
            out["load"] = {"started_at": began} | await load_curve(bootstrap, workdir, quick)
            out["load"]["finished_at"] = _now()
    return out


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for the PNGs and cost_curves.json")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    parser.add_argument("--only", default="rules,state,load", help="comma-separated: rules, state, load")
    args = parser.parse_args()
    figures = run(args.out, args.quick, [name.strip() for name in args.only.split(",") if name.strip()])
    if args.json:
        print(json.dumps(figures))
    else:
        print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
