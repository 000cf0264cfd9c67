"""Engine benchmark: a generated 200-rule policy, 5 windowed limits, history-based risk.

100,000 realistic intents from 1,000 agents over one day of event time. Times, per already-parsed
intent (perf_counter_ns): ``evaluate()`` with the wire Decision built (``p50_us``/``p99_us``: what a
worker needs, since it publishes the Decision) and ``evaluate()`` for the verdict only
(``verdict_p50_us``/``verdict_p99_us``: the Decision is built lazily and not asked for);
``Intent.model_validate_json`` separately; the engine's one entry as a worker's deciding stage calls
it, from the intent's bytes to its Decision (``entry_p50_us``/``entry_p99_us``: ``evaluate_raw`` with
the worker's context: clock, arrival time, skew bound, agent scopes; parsing included); and the state
size per active (agent, limit) window key. ``p50_vs_parse``: the full evaluation's p50 over the
p50 of parsing and validating the same intents. ``--json`` prints one JSON line.

``--peers [N]`` (``pip install -e '.[bench]'``) also evaluates the same rules, on the first N intents,
in the engines a user would pick instead (:mod:`bench.peers`: Cedar, the Agent Governance Toolkit),
beside sluicegate's rules-only evaluation, their verdicts checked against sluicegate's, and reports
``p50_vs_best_peer``.

``--state-size`` measures instead how big one key's state gets under a flood (:func:`state_sizes`): a
sum window holding 1,000,000 actions of one agent, and a sequence rule's trail after 1,000,000 earlier
actions, encoded as a worker's changelog stores them.

    .venv/bin/python bench/engine.py [--json] [--intents N] [--agents N] [--repeat N] [--profile] [--peers]
    .venv/bin/python bench/engine.py --state-size [--json] [--actions N]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import random
import struct
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import perf_counter_ns
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.peers import peers
from schemas import DecisionKind, Intent
from streams.engine import (
    AGENT_SCOPES,
    CompiledPolicy,
    Context,
    InMemoryState,
    apply,
    compile_policy,
    evaluate,
    evaluate_raw,
)
from streams.engine.state import HistoryState, TrailState, WindowState
from streams.state.table_state import MAX_TOKENS, TableState

SERVICES = ["payments", "crm", "tickets", "db", "services", "instances", "iam", "logs", "metrics", "files"]
VERBS = ["get", "list", "create", "update", "delete", "refund", "export", "scale", "query", "sync"]
ACTIONS = ["read", "create", "update", "delete", "execute"]
ROLES = ["support", "devops", "finance", "analyst", "ops"]
ENVS = ["dev", "staging", "production"]
TOOLS = [f"{service}.{verb}" for service in SERVICES for verb in VERBS]  # 100 tools


def policy_text(rules: int = 200) -> str:
    """A policy with ``rules`` rules (exact tools, some globs, conditions), 5 limits and a risk model."""
    rng = random.Random(7)
    lines = ["policy: bench", "default: BLOCK", "schedules:",
             "  business_hours: {timezone: Europe/Paris, days: [mon, tue, wed, thu, fri], "
             "start: '09:00', end: '18:00'}", "rules:"]
    for index in range(rules):
        tool = TOOLS[index % len(TOOLS)]
        service = tool.split(".")[0]
        kind = index % 8
        lines.append(f"  - id: rule-{index}")
        lines.append(f"    description: generated rule {index}")
        if kind == 7:
            lines.append(f"    match: {{tool: '{service}.*', action: delete, environment: production}}")
            lines.append("    decision: BLOCK")
            continue
        action = ACTIONS[index % 5]
        lines.append(f"    match: {{tool: {tool}, action: [{action}, read], target: '{service}:*'}}")
        if kind in (0, 1):
            lines.append(f"    when: {{field: params.amount, op: lte, value: {50 * (1 + index % 10)}}}")
            lines.append("    decision: ALLOW")
        elif kind == 2:
            lines.append("    when: {all: [{field: params.amount, op: gt, value: 500}, "
                         "{field: params.amount, op: lte, value: 5000}]}")
            lines.append("    decision: REQUIRE_APPROVAL")
        elif kind == 3:
            lines.append("    when: {field: params.record_count, op: gte, value: 100, default: 1}")
            lines.append("    decision: REQUIRE_APPROVAL")
        elif kind == 4:
            lines.append("    when: {field: environment, op: in, value: [dev, staging]}")
            lines.append("    decision: ALLOW")
        elif kind == 5:
            lines.append("    when: {not: {schedule: business_hours}}")
            lines.append("    decision: REQUIRE_APPROVAL")
        else:
            lines.append(f"    when: {{field: params.region, op: regex, value: '^eu-{rng.randint(1, 3)}'}}")
            lines.append("    decision: ALLOW")
    lines += [
        "limits:",
        "  - {id: per-agent-hour, key: agent, window: 1h, count: 50}",
        "  - {id: per-agent-minute, key: agent, window: 1m, count: 20}",
        "  - {id: agent-spend-day, key: agent, window: 24h, sum: params.amount, max: 50000,"
        " match: {tool: 'payments.*'}}",
        "  - {id: writes-per-tool, key: [agent, tool], window: 10m, count: 30,"
        " match: {action: [create, update, delete]}}",
        "  - {id: fleet-refunds, key: fleet, window: 24h, sum: params.amount, max: 100000000,"
        " match: {tool: payments.refund}}",
        "risk:",
        "  action_weights: {read: 0.0, create: 0.05, update: 0.05, delete: 0.2, execute: 0.1}",
        "  target_sensitivity: [{target: 'payments:*', weight: 0.1}, {target: 'iam:*', weight: 0.3}]",
        "  magnitude: [{field: params.amount, scale: 5000, weight: 0.1}]",
        "  history:",
        "    min_observations: 10",
        "    amount: {field: params.amount, z: 3.0, weight: 0.6}",
        "    new_target: {weight: 0.35}",
        "    unusual_hour: {weight: 0.3}",
        "    burst: {window: 1m, ratio: 10, weight: 0.6}",
        "  thresholds: [{at_least: 0.9, decision: BLOCK}, {at_least: 0.6, decision: REQUIRE_APPROVAL}]",
    ]
    return "\n".join(lines) + "\n"


def intents(count: int, agents: int) -> list[bytes]:
    """Realistic JSON intents: each agent has a role, an environment, a few tools and usual amounts."""
    rng = random.Random(42)
    profiles = []
    for index in range(agents):
        tools = rng.sample(TOOLS, rng.randint(2, 4))
        env = rng.choices(ENVS, weights=[3, 3, 4])[0]
        profiles.append((f"agent-{index:04d}", rng.choice(ROLES), env, tools, rng.uniform(5, 60)))
    start = datetime(2025, 3, 3, tzinfo=UTC)
    step_ms = 86_400_000 / count
    out = []
    for index in range(count):
        agent, role, env, tools, usual = profiles[rng.randrange(agents)]
        tool = rng.choice(tools)
        usual_action = ACTIONS[TOOLS.index(tool) % 5]  # what the policy's rules for this tool expect
        action = usual_action if rng.random() < 0.85 else rng.choice(ACTIONS)
        params: dict[str, Any] = {"amount": round(abs(rng.gauss(usual, usual / 5)), 2)}
        if rng.random() < 0.3:
            params["record_count"] = rng.randint(1, 300)
        if rng.random() < 0.2:
            params["region"] = rng.choice(["eu-1", "eu-2", "us-1"])
        at = start + timedelta(milliseconds=int(index * step_ms))
        out.append(json.dumps({
            "request_id": str(uuid.UUID(int=rng.getrandbits(128))), "agent_id": agent, "agent_role": role,
            "environment": env, "tool": tool, "action": action,
            "target": f"{tool.split('.')[0]}:{rng.choice(['main', 'eu', 'us', 'archive'])}",
            "params": params, "occurred_at": at.isoformat().replace("+00:00", "Z"),
        }).encode())
    return out


def percentile(sorted_ns: list[int], fraction: float) -> float:
    """The value at ``fraction`` of a sorted list, in microseconds."""
    return sorted_ns[min(len(sorted_ns) - 1, int(fraction * len(sorted_ns)))] / 1000


def deep_size(window: WindowState | HistoryState, key: str) -> int:
    """Bytes held by one state entry: key, object, arrays and its share of the dict slot."""
    size = sys.getsizeof(key) + sys.getsizeof(window) + 3 * 8  # dict entry: hash, key, value
    if isinstance(window, WindowState):
        size += sys.getsizeof(window.times_ms) + (sys.getsizeof(window.values) if window.values else 0)
    else:
        size += sum(sys.getsizeof(getattr(window, name)) for name in ("hours", "targets", "recent_ms"))
    return size


def _replay(
    policy: CompiledPolicy, parsed: list[Intent], profile: bool, built: bool = True,
) -> tuple[list[int], InMemoryState, dict[DecisionKind, int]]:
    """One timed pass over the stream from empty state: sorted ns per evaluate(), state, decisions.

    ``built``: the time includes building the Decision (else the verdict only).
    """
    state = InMemoryState()
    eval_ns: list[int] = []
    decisions = dict.fromkeys(DecisionKind, 0)
    profiler = cProfile.Profile() if profile else None
    gc.collect()
    gc.freeze()
    if profiler is not None:
        profiler.enable()
    for intent in parsed:
        if built:
            began = perf_counter_ns()
            result = evaluate(policy, state, intent)
            result.decision  # noqa: B018 - built on first access: part of the cost a worker pays
            eval_ns.append(perf_counter_ns() - began)
        else:
            began = perf_counter_ns()
            result = evaluate(policy, state, intent)
            eval_ns.append(perf_counter_ns() - began)
        kind = result.kind
        decisions[kind] += 1
        if kind is DecisionKind.ALLOW:
            apply(state, result.changes)
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    gc.unfreeze()
    eval_ns.sort()
    return eval_ns, state, decisions


def _replay_entry(policy: CompiledPolicy, raw: list[bytes], arrived_ms: list[int]) -> list[int]:
    """One timed pass of ``evaluate_raw`` from empty state, as a worker's deciding stage calls it (the
    record arrived 50 ms after its event time; the worker's clock a second later): sorted ns."""
    state = InMemoryState()
    entry_ns: list[int] = []
    gc.collect()
    gc.freeze()
    for body, arrived in zip(raw, arrived_ms, strict=True):
        began = perf_counter_ns()
        result = evaluate_raw(policy, state, body, Context(arrived + 1000, arrived, 300_000, AGENT_SCOPES))
        entry_ns.append(perf_counter_ns() - began)
        if result.decision.decision is DecisionKind.ALLOW:
            apply(state, result.changes)  # shared windows included: the hops' state, here
    gc.unfreeze()
    entry_ns.sort()
    return entry_ns


def run(count: int, agents: int, profile: bool, repeat: int = 1, peer_intents: int = 0) -> dict[str, Any]:
    """Run the benchmark and return its figures (the evaluation pass with the best p50 of ``repeat``)."""
    policy = compile_policy(policy_text(), "bench.yaml")
    raw = intents(count, agents)
    parse_ns: list[int] = []
    parsed: list[Intent] = []
    for item in raw:
        began = perf_counter_ns()
        intent = Intent.model_validate_json(item)
        parse_ns.append(perf_counter_ns() - began)
        parsed.append(intent)
    runs = [_replay(policy, parsed, profile) for _ in range(repeat)]
    eval_ns, state, decisions = min(runs, key=lambda run: percentile(run[0], 0.5))
    verdict_ns = min((_replay(policy, parsed, False, built=False)[0] for _ in range(repeat)),
                     key=lambda times: percentile(times, 0.5))
    arrived = [intent.occurred_at_ms + 50 for intent in parsed]
    entry_ns = min((_replay_entry(policy, raw, arrived) for _ in range(repeat)),
                   key=lambda times: percentile(times, 0.5))
    parse_ns.sort()
    window_bytes = [deep_size(window, key) for key, window in state.windows.items() if "|agent=" in key]
    history_bytes = [deep_size(history, key) for key, history in state.histories.items()]
    return {
        "intents": count, "agents": agents, "repeat": repeat,
        "rules": policy.rule_count, "limits": len(policy.limits),
        "p50_us": percentile(eval_ns, 0.5), "p90_us": percentile(eval_ns, 0.9),
        "p99_us": percentile(eval_ns, 0.99), "max_us": eval_ns[-1] / 1000,
        "p50_vs_parse": round(percentile(eval_ns, 0.5) / percentile(parse_ns, 0.5), 3),
        "mean_us": sum(eval_ns) / len(eval_ns) / 1000,
        "verdict_p50_us": percentile(verdict_ns, 0.5), "verdict_p99_us": percentile(verdict_ns, 0.99),
        "parse_p50_us": percentile(parse_ns, 0.5), "parse_p99_us": percentile(parse_ns, 0.99),
        "entry_p50_us": percentile(entry_ns, 0.5), "entry_p99_us": percentile(entry_ns, 0.99),
        "bytes_per_key": round(sum(window_bytes) / max(1, len(window_bytes)), 1),
        "max_bytes_per_key": max(window_bytes, default=0),
        "serialised_bytes_per_key": round(
            sum(len(w.to_bytes()) for w in state.windows.values()) / max(1, len(state.windows)), 1),
        "agent_keys": len(window_bytes),
        "history_bytes_per_key": round(sum(history_bytes) / max(1, len(history_bytes)), 1),
        "decisions": {kind.value: number for kind, number in decisions.items()},
        "python": sys.version.split()[0], "load_average": [round(load, 2) for load in os.getloadavg()],
    } | ({"peers": peers(policy_text(), parsed[:peer_intents], repeat)} if peer_intents else {})


def state_sizes(actions: int = 1_000_000) -> dict[str, Any]:
    """One agent's state under ``actions`` actions: a ``sum`` limit of 1h holding them all (one every
    3 ms) and a 30m sequence rule's trail after as many earlier actions (one a second), encoded as the
    worker's changelog stores them (the window's value with a full set of request tokens); and the time
    to judge one more action on that window, in order and one window late (best of 5)."""
    window, trail = WindowState(), TrailState()
    start = 1_767_600_000_000
    began = perf_counter_ns()
    for index in range(actions):
        window.add(start + 3 * index, 1.0, 3_600_000, None)
    add_ns = (perf_counter_ns() - began) / actions
    for index in range(actions):
        trail.add(start + 1000 * index, 1_800_000)
    table: dict[str, bytes] = {}
    store = TableState(table)
    store.put_window("spend|agent=a", window)
    table["w|spend|agent=a"] = struct.pack("<I", MAX_TOKENS) + bytes(8 * MAX_TOKENS) + window.to_bytes()
    store.put_trail("seq|agent=a", trail)
    newest = start + 3 * (actions - 1)

    def judge(at_ms: int) -> float:
        best = min(_timed(lambda: window.peak_total(at_ms, 3_600_000, 1.0)) for _ in range(5))
        return round(best / 1000, 1)

    return {
        "actions": actions,
        "sum_window_bytes": len(window.to_bytes()),
        "sum_window_changelog_value_bytes": len(table["w|spend|agent=a"]),
        "sum_window_exact_entries": len(window.times_ms), "sum_window_buckets": len(window.starts),
        "sum_window_add_ns": round(add_ns),
        "sum_window_judge_us": judge(newest + 1), "sum_window_judge_late_us": judge(newest - 3_600_000 + 1),
        "trail_times": len(trail.times_ms), "trail_changelog_value_bytes": len(table["q|seq|agent=a"]),
        "python": sys.version.split()[0], "load_average": [round(load, 2) for load in os.getloadavg()],
    }


def _timed(call: Any) -> int:
    began = perf_counter_ns()
    call()
    return perf_counter_ns() - began


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--intents", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=1_000)
    parser.add_argument("--profile", action="store_true", help="cProfile the evaluation loop (to stderr)")
    parser.add_argument("--repeat", type=int, default=1, help="timed passes; the best p50 is reported")
    parser.add_argument("--peers", type=int, nargs="?", const=10_000, default=0, metavar="N",
                        help="also the peers (Cedar, the Agent Governance Toolkit) on the first N intents")
    parser.add_argument("--state-size", action="store_true", help="one key's state under a flood instead")
    parser.add_argument("--actions", type=int, default=1_000_000, help="actions of the --state-size flood")
    args = parser.parse_args()
    if args.state_size:
        figures = state_sizes(args.actions)
    else:
        figures = run(args.intents, args.agents, args.profile, args.repeat, args.peers)
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:>26}: {value}")


if __name__ == "__main__":
    main()
