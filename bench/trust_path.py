"""What trust adds to a worker's CPU per intent, beside what it pays anyway: the worker's two trust calls
(:class:`streams.runtime.trust.WorkerTrust`: ``admit`` verifies the intent's authenticator, ``seal``
authenticates its decision) with trust on and off, and parsing the same intent.

CPU time of this process (``time.process_time``: other work on a shared machine does not count),
``--rounds`` rounds of ``--n`` calls each, the operations alternating within every round; the best
round of each, in µs, and ``trust_vs_parse``: (admit + seal, on minus off) over parse.

    .venv/bin/python bench/trust_path.py [--json] [--n N] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from time import process_time

from aiokafka.structs import ConsumerRecord

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.e2e import intent_bytes
from schemas import Intent
from sluicegate.routing import partition_for
from sluicegate.trust import AUTH_HEADER, AgentCredential, KeyRing, RequestSigner
from streams.runtime.trust import WorkerTrust
from streams.stages.outputs import Route, Send

PARTITIONS = 6
DECISION_BYTES = 630
"""A decision's size as bench/e2e.py measures it on a worker."""


def operations() -> dict[str, Callable[[], object]]:
    """The calls to time, on one intent of the e2e bench and a decision of a worker's size."""
    ring = KeyRing.generate()
    on, off = WorkerTrust(ring, RequestSigner.generate(), PARTITIONS), WorkerTrust(None, None, PARTITIONS)
    _, key, value = intent_bytes(1)
    credential = AgentCredential.issue(ring, key.decode(), "support", "production")
    headers = ((AUTH_HEADER, credential.authenticate(value)),)
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        "intents", partition_for(key.decode(), PARTITIONS), 0, 0, 0, key, value, None, len(key), len(value),
        headers)
    intent = Intent.model_validate_json(value)
    if on.admit(intent, record) is not None:
        raise SystemExit("the intent does not verify")
    decision = Send(Route.DECISIONS, key, b'{"d":"' + b"x" * (DECISION_BYTES - 8) + b'"}',
                    agent=(key.decode(), "support", "production", ""))
    return {
        "admit_on": lambda: on.admit(intent, record), "admit_off": lambda: off.admit(intent, record),
        "seal_on": lambda: on.seal(decision), "seal_off": lambda: off.seal(decision),
        "parse": lambda: Intent.model_validate_json(value),
    }


def measure(n: int, rounds: int) -> dict[str, float]:
    """The best round of each operation, µs per call, and the ratio to parsing."""
    ops = operations()
    best = dict.fromkeys(ops, float("inf"))
    for _ in range(rounds):
        for name, call in ops.items():
            best[name] = min(best[name], timeit.Timer(call, timer=process_time).timeit(n) / n * 1e6)
    added = best["admit_on"] + best["seal_on"] - best["admit_off"] - best["seal_off"]
    figures = {f"{name}_us": round(value, 2) for name, value in best.items()}
    return figures | {"trust_added_us": round(added, 2), "trust_vs_parse": round(added / best["parse"], 3),
                      "load": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="one JSON line")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    figures = measure(args.n, args.rounds)
    print(json.dumps(figures) if args.json else "\n".join(f"{k}: {v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
