"""The floors' pure helpers (bench/floors.py) and the e2e bench's alternation and write shape."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, cast

from bench.e2e import Responder, alternating, shape_of
from bench.floors import padded, reply, request_id
from schemas import TopicNames


def test_request_id_is_found_in_compact_and_spaced_json() -> None:
    assert request_id(b'{"request_id":"abc-1","x":2}') == b"abc-1"
    assert request_id(json.dumps({"agent_id": "a", "request_id": "abc-2"}).encode()) == b"abc-2"


def test_a_reply_is_decision_shaped_json_of_the_asked_size() -> None:
    body = reply(b"rid-1", b"agent-7", 640)
    decision = json.loads(body)
    assert len(body) == 640
    fields = (decision["request_id"], decision["agent_id"], decision["decision"])
    assert fields == ("rid-1", "agent-7", "ALLOW")
    assert "decided_at" in decision
    assert len(padded(b'{"kind":"state",', 300)) == 300


def _responder(name: str) -> Responder:
    return Responder(name, TopicNames(name), cast(subprocess.Popen, None), Path("/dev/null"))  # type: ignore[type-arg]


def test_alternating_visits_every_responder_once_per_round_reversing_the_order() -> None:
    a, b, c = (_responder(n) for n in "abc")
    order = [(index, r.name) for index, r in alternating([a, b, c], 3)]
    assert order == [(0, "a"), (0, "b"), (0, "c"), (1, "c"), (1, "b"), (1, "a"), (2, "a"), (2, "b"), (2, "c")]


def test_the_writes_floor_writes_what_the_worker_wrote_per_intent() -> None:
    worker = _responder("w")
    writes: dict[str, dict[str, Any]] = {
        "w.decisions": {"per_intent": 1.0, "bytes": 630}, "w.audit": {"per_intent": 1.0, "bytes": 1240},
        "w-worker-agent-state-changelog": {"per_intent": 1.0, "bytes": 700},
        "w.internal.shared-limits": {"per_intent": 1.0, "bytes": 900},
    }
    shape = shape_of(worker, writes)
    assert (shape.decision_bytes, shape.audit_bytes, shape.audit_per_intent) == (630, 1240, 1.0)
    assert (shape.other_bytes, shape.other_per_intent) == (800, 2.0)
