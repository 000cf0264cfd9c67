"""Trust primitives' cost per message (sluicegate.trust), beside parsing the same intent.

Per operation, the best of ``--repeat`` rounds of ``--n`` calls (perf_counter_ns; like ``timeit``,
the fastest round is the least disturbed by other work on the machine), in microseconds:

- ``hmac_sign_us``: an agent authenticating a 500-byte intent (``AgentCredential.authenticate``:
  HMAC-SHA256 and base64url), what the SDK adds per intent and the worker per decision;
- ``hmac_verify_us``: a worker checking it (split the header, derive the agent's key from the claimed
  identity, cached as workers do, constant-time compare);
- ``derive_us``: deriving a key uncached (a worker's first message from an agent after a restart);
- ``ed25519_sign_us`` / ``ed25519_verify_us``: an approval request (about 1.2 kB) signed by a worker
  (``RequestSigner.sign``) and verified by the Slack bot or the CLI (``verify_request``);
- ``hmac_floor_us``: ``hmac.digest`` of the 500 bytes alone (the library's floor);
- ``parse_intent_us``: ``Intent.model_validate_json`` of the same 500 bytes, what every worker pays
  anyway, for the ratios (``*_ratio``: operation / parse).

    .venv/bin/python bench/trust.py [--json] [--n N] [--repeat N]
"""

from __future__ import annotations

import argparse
import hmac
import json
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import perf_counter_ns

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas import ApprovalRequest, Intent
from sluicegate.trust import (
    AgentCredential,
    KeyRing,
    RequestSigner,
    agent_names,
    check,
    header,
    split_authenticator,
    verify_request,
)
from sluicegate.trust import _derive as derive_cached

OPERATIONS = ("hmac_floor", "hmac_sign", "hmac_verify", "derive", "ed25519_sign", "ed25519_verify")


def intent_bytes(size: int = 500) -> bytes:
    """A realistic intent serialised to about ``size`` bytes."""
    intent = Intent.model_validate({
        "request_id": str(uuid.uuid4()), "agent_id": "support-0042", "agent_role": "support",
        "agent_owner": "team-support", "environment": "production", "tool": "payments.refund",
        "action": "create", "target": "payments:refunds",
        "params": {"order_id": "ord_8d1f0c2a", "amount": 42.5, "currency": "EUR", "reason": ""},
        "occurred_at": datetime(2026, 12, 3, 10, tzinfo=UTC).isoformat(),
    })
    raw = intent.model_dump_json().encode()
    pad = size - len(raw)
    if pad > 0:
        intent = intent.model_copy(update={"params": {**intent.params, "reason": "x" * pad}})
        raw = intent.model_dump_json().encode()
    return raw


def timed(op: Callable[[], object], n: int, repeat: int) -> float:
    """The best over ``repeat`` rounds of the mean time of one call, in microseconds."""
    rounds = []
    for _ in range(repeat):
        start = perf_counter_ns()
        for _ in range(n):
            op()
        rounds.append((perf_counter_ns() - start) / n / 1000)
    return min(rounds)


def measure(n: int, repeat: int) -> dict[str, float | int]:
    ring = KeyRing.generate("k1")
    credential = AgentCredential.issue(ring, "support-0042", "support", "production", "team-support")
    value = intent_bytes()
    headers = [("sg-auth", credential.authenticate(value))]
    names = agent_names(credential.agent_id, credential.role, credential.environment, credential.owner)

    def verify() -> None:
        key_id, mac = split_authenticator(header(headers))
        check(ring.derive(key_id, "agent", *names), value, mac)

    counter = iter(range(10**12))

    def derive_uncached() -> None:
        derive_cached.__wrapped__(ring.master("k1"), "agent", (f"agent-{next(counter)}", "r", "e", ""))

    signer = RequestSigner.generate()
    intent = Intent.model_validate_json(value)
    now = datetime(2026, 12, 3, 10, tzinfo=UTC)
    request = ApprovalRequest(
        request_id=intent.request_id, intent=intent, intent_digest=intent.digest(),
        reasons=("refund-needs-approval: refunds over $50 need a support lead",),
        rules=("refund-needs-approval",), approver_group="support-leads", created_at=now,
        deadline_at=now + timedelta(minutes=15),
    ).model_dump_json().encode()
    signed = [("sg-auth", signer.sign(request))]
    public = signer.public

    figures: dict[str, float | int] = {
        "intent_bytes": len(value), "request_bytes": len(request), "n": n, "repeat": repeat,
        "hmac_floor_us": timed(lambda: hmac.digest(credential.key, value, "sha256"), n, repeat),
        "parse_intent_us": timed(lambda: Intent.model_validate_json(value), n, repeat),
        "hmac_sign_us": timed(lambda: credential.authenticate(value), n, repeat),
        "hmac_verify_us": timed(verify, n, repeat),
        "derive_us": timed(derive_uncached, n, repeat),
        "ed25519_sign_us": timed(lambda: signer.sign(request), max(n // 10, 1), repeat),
        "ed25519_verify_us": timed(lambda: verify_request(public, signed, request), max(n // 10, 1), repeat),
    }
    parse = float(figures["parse_intent_us"])
    for name in OPERATIONS:
        figures[f"{name}_ratio"] = round(float(figures[f"{name}_us"]) / parse, 2)
    for name, figure in figures.items():
        if name.endswith("_us"):
            figures[name] = round(float(figure), 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--n", type=int, default=20_000, help="calls per round (Ed25519: a tenth)")
    parser.add_argument("--repeat", type=int, default=7, help="rounds; the fastest is reported")
    args = parser.parse_args()
    figures = measure(args.n, args.repeat)
    if args.json:
        print(json.dumps({"bench": "trust", **figures}))
        return
    print(f"intent {figures['intent_bytes']} bytes, approval request {figures['request_bytes']} bytes")
    for name in ("hmac_floor", "parse_intent", *OPERATIONS[1:]):
        ratio = figures.get(f"{name}_ratio")
        print(f"{name:16} {figures[f'{name}_us']:8.2f} us" + (f"   {ratio:5.2f}x parse" if ratio else ""))


if __name__ == "__main__":
    main()
