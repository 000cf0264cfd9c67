"""What a shadow policy costs the deciding stage, in process (no Kafka): the decide stage's
``handle_intent`` (parse, decide, count, receipt, decision and audit records: all a worker does for an
intent besides Kafka I/O) on the demo fleet's traffic under ``policies/demo.yaml``, without a shadow and
with one, alternating in rounds on fresh tables. Process CPU per intent (``time.process_time``), the
medians of the rounds, and their ratio ``shadow_vs_off``.

The shadow is the same policy renamed (``--same``, the default: the cost of evaluating twice, nothing
else differs) or a stricter copy (``--stricter``: refunds over 20 and scaling outside production need
approval, so the shadow also opens approval requests in its audit records). ``bench/e2e.py --shadow``
measures the same over Kafka, with a worker beside it.

    .venv/bin/python bench/shadow.py [--json] [--intents N] [--rounds N] [--stricter]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas import Intent
from sluicegate.demo.fleet import FleetSimulator, build_fleet
from streams.engine import CompiledPolicy, compile_policy
from streams.stages.decide import DecideStage

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "policies" / "demo.yaml"
STRICTER = {
    "    when: {field: params.amount, op: lte, value: 50}\n    decision: ALLOW":
        "    when: {field: params.amount, op: lte, value: 20}\n    decision: ALLOW",
    'environment: [dev, staging]}\n    decision: ALLOW':
        'environment: [dev, staging]}\n    decision: REQUIRE_APPROVAL\n    approval: {group: on-call}',
}


def traffic(count: int) -> list[tuple[bytes, bytes]]:
    """The demo fleet's intents (key, value), 200 per second of event time."""
    fleet = FleetSimulator(build_fleet(300), seed=3)
    start = datetime(2026, 11, 30, 9, tzinfo=UTC)
    out = []
    for index in range(count):
        at = start + timedelta(milliseconds=5 * index)
        call = fleet.next_call(at)
        intent = Intent(request_id=f"00000000-0000-4000-8000-{index:012d}", agent_id=call.agent.agent_id,
                        agent_role=call.agent.role, environment=call.agent.environment,
                        agent_owner=call.agent.owner, tool=call.tool, action=call.action, target=call.target,
                        params=call.params, occurred_at=call.occurred_at or at)
        out.append((intent.agent_id.encode(), intent.model_dump_json().encode()))
    return out


def shadow_of(text: str, stricter: bool) -> CompiledPolicy:
    """The shadow: the policy renamed, or its stricter copy."""
    if stricter:
        for old, new in STRICTER.items():
            text = text.replace(old, new)
    return compile_policy(text.replace("policy: demo_fleet", "policy: demo_fleet_shadow", 1), "shadow")


def one_pass(policy: CompiledPolicy, shadow: CompiledPolicy | None, records: list[tuple[bytes, bytes]],
             now_ms: int) -> float:
    """CPU seconds per intent of one pass over fresh tables."""
    stage = DecideStage({})
    start = time.process_time()
    for key, value in records:
        stage.handle_intent(value, key, policy, 0, now_ms, now_ms, None, shadow)
    return (time.process_time() - start) / len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--intents", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stricter", action="store_true", help="a stricter shadow instead of the same rules")
    args = parser.parse_args()
    text = DEMO.read_text()
    policy, shadow = compile_policy(text, str(DEMO)), shadow_of(text, args.stricter)
    records = traffic(args.intents)
    now_ms = int(datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp() * 1000)
    one_pass(policy, shadow, records[:2000], now_ms)  # warm: memos, imports
    off, on = [], []
    for _ in range(args.rounds):
        off.append(one_pass(policy, None, records, now_ms))
        on.append(one_pass(policy, shadow, records, now_ms))
    figures = {
        "intents": args.intents, "rounds": args.rounds, "shadow": "stricter" if args.stricter else "same",
        "off_us_per_intent": round(1e6 * statistics.median(off), 1),
        "shadow_us_per_intent": round(1e6 * statistics.median(on), 1),
        "shadow_vs_off": round(statistics.median(on) / statistics.median(off), 3),
        "load": round(os.getloadavg()[0], 1),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:>22}: {value}")


if __name__ == "__main__":
    main()
