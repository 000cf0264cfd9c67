"""Bad input for the intents topic: a fixed corpus and seeded variants of a valid intent.

Pure generation, no I/O. Every record is something a broken or hostile producer could publish: the
worker must answer it with a BLOCK or park it on the dead-letter topic, and never crash on it.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime
from typing import Any

from schemas.intent import MAX_INTENT_BYTES

NESTING = 300


def valid_intent(agent_id: str, rng: random.Random) -> dict[str, Any]:
    """A well-formed intent document (the base the variants break)."""
    return {
        "schema_version": 1, "request_id": str(uuid.UUID(int=rng.getrandbits(128))), "agent_id": agent_id,
        "agent_role": "support", "environment": "production", "tool": "payments.refund", "action": "create",
        "target": "payments:refunds", "params": {"amount": 10},
        "occurred_at": datetime.now(UTC).isoformat(),
    }


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def _padded(base: dict[str, Any], size: int) -> bytes:
    """``base`` with a params string making the record exactly ``size`` bytes."""
    doc = dict(base, params={"amount": 10, "note": ""})
    empty = len(json.dumps(doc).encode())
    doc["params"]["note"] = "x" * max(0, size - empty)
    return json.dumps(doc).encode()


def corpus(agent_id: str, rng: random.Random) -> list[tuple[str, bytes]]:
    """The fixed corpus: (kind, record value), one of each kind."""
    base = valid_intent(agent_id, rng)
    text = json.dumps(base)
    return [
        ("non_json", b"this is not json"),
        ("truncated", text[: len(text) // 2].encode()),
        ("wrong_types", json.dumps(dict(base, agent_id=123, occurred_at="yesterday", params=[1])).encode()),
        ("unknown_schema_version", json.dumps(dict(base, schema_version=99)).encode()),
        ("nan", text.replace('"amount": 10', '"amount": NaN').encode()),
        ("nesting_300", json.dumps(dict(base, params={"deep": _nested(NESTING)})).encode()),
        ("under_size_cap", _padded(base, MAX_INTENT_BYTES - 16)),
        ("over_size_cap", _padded(base, MAX_INTENT_BYTES + 16)),
        ("non_utf8", b'{"agent_id": "\xff\xfe\xfd", "tool": "\xc3\x28"}'),
        ("empty", b""),
    ]


def variant(agent_id: str, rng: random.Random) -> tuple[str, bytes]:
    """A generated variant: a valid intent with bytes flipped, cut, or a field swapped for junk."""
    raw = bytearray(json.dumps(valid_intent(agent_id, rng)).encode())
    how = rng.choice(("flip", "cut", "junk_field"))
    if how == "flip":
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif how == "cut":
        del raw[rng.randrange(1, len(raw)):]
    else:
        doc = json.loads(raw)
        doc[rng.choice(list(doc))] = rng.choice([None, [], {}, -1, 1e308, "", "\u0000", True])
        raw = bytearray(json.dumps(doc).encode())
    return f"variant_{how}", bytes(raw)
