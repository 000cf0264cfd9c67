"""The Python SDK passes sluicegate's wire test vectors (``schemas/vectors/wire.json``), and the file is
what ``tests/vectors/build.py`` makes: a wire change shows up here, and the vectors are rebuilt on
purpose."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas import ApprovalRequest, ApprovalVerdict, Decision, Intent
from sluicegate.routing import ReplyCheck, murmur2, partition_for
from sluicegate.trust import (
    AgentCredential,
    KeyRing,
    SignerCredential,
    TrustError,
    verify_request,
    verify_signed,
)
from tests.vectors.build import render

WIRE = Path(__file__).resolve().parents[2] / "schemas" / "vectors" / "wire.json"


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(WIRE.read_text(encoding="utf-8"))
    return loaded


def record(vector: dict[str, Any]) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A vector's exact value bytes (UTF-8 of its ``value``) and its headers."""
    return vector["value"].encode(), [(name, value.encode()) for name, value in vector["headers"]]


def test_the_file_is_what_the_builder_makes() -> None:
    assert WIRE.read_text(encoding="utf-8") == render()


def test_an_intent_parses_digests_partitions_and_authenticates(vectors: dict[str, Any]) -> None:
    vector, keys = vectors["intent"], vectors["keys"]
    value, headers = record(vector)
    intent = Intent.model_validate_json(value)
    assert intent.digest() == vector["digest"]
    assert vector["key"] == intent.agent_id
    assert {n: partition_for(vector["key"], int(n)) for n in vector["partitions"]} == vector["partitions"]
    credential = AgentCredential.parse(keys["agent_credential"])
    assert headers == [("sg-auth", credential.authenticate(value))]
    ring = KeyRing.parse(keys["ring"])
    other = AgentCredential.issue(ring, intent.agent_id, "admin", "production", "team-a")
    assert other.authenticate(value) != headers[0][1]  # the identity is part of the key


def test_the_workers_decision_verifies_for_the_agent_and_the_action(vectors: dict[str, Any]) -> None:
    value, headers = record(vectors["decision"])
    credential = AgentCredential.parse(vectors["keys"]["agent_credential"])
    check = ReplyCheck(credential.key_id, credential.key, vectors["intent"]["digest"])
    decision = Decision.model_validate_json(value)
    assert check.problem(decision, value, headers, credential.agent_id) is None
    assert check.problem(decision, value + b" ", headers, credential.agent_id) == "wrong authenticator"


def test_the_approval_request_is_signed_by_the_workers_and_shows_what_is_approved(
    vectors: dict[str, Any]
) -> None:
    value, headers = record(vectors["approval_request"])
    verify_request(vectors["keys"]["request_public_key"], headers, value)
    with pytest.raises(TrustError):
        verify_request(vectors["keys"]["request_public_key"], headers, value.replace(b"250.5", b"2500"))
    request = ApprovalRequest.model_validate_json(value)
    assert request.intent_digest == request.intent.digest() == vectors["intent"]["digest"]


def test_the_verdict_is_signed_by_its_reviewer(vectors: dict[str, Any]) -> None:
    value, headers = record(vectors["verdict"])
    keys = vectors["keys"]
    assert verify_signed(KeyRing.parse(keys["ring"]), headers, value, ("reviewer",)) == ("reviewer", "alice")
    reviewer = SignerCredential.parse(keys["reviewer_credential"], "reviewer")
    assert headers == reviewer.headers(value)
    assert ApprovalVerdict.model_validate_json(value).intent_digest == vectors["intent"]["digest"]


def test_the_partitioner_is_kafkas_default(vectors: dict[str, Any]) -> None:
    for case in vectors["partitioner"]:
        assert murmur2(case["key"].encode()) == case["murmur2"]
        positive = case["murmur2"] & 0x7FFFFFFF
        assert {n: positive % int(n) for n in case["partitions"]} == case["partitions"]
        assert {n: partition_for(case["key"], int(n)) for n in case["partitions"]} == case["partitions"]
