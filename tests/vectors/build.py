"""Build ``schemas/vectors/wire.json``: the records of sluicegate's wire with everything an SDK in another
language must reproduce or verify — exact value bytes, intent digests, record keys and partitions,
``sg-auth`` authenticators and Ed25519 signatures — made from fixed, published test keys.

    python -m tests.vectors.build > schemas/vectors/wire.json

Values are JSON written by hand (as another producer would write them), not this SDK's serialization:
authenticators are over the exact bytes produced, and digests over (tool, action, target, params) only.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

from schemas import Intent
from sluicegate.routing import murmur2, partition_for
from sluicegate.trust import (
    AUTH_HEADER,
    AgentCredential,
    KeyRing,
    RequestSigner,
    SignerCredential,
    authenticator,
)

RING = KeyRing.parse("kv1:" + base64.urlsafe_b64encode(bytes(range(1, 33))).rstrip(b"=").decode())
"""The test deployment's master key ring (never use it for anything else)."""
SIGNER = RequestSigner.parse(base64.urlsafe_b64encode(bytes(range(101, 133))).rstrip(b"=").decode())
"""The test workers' Ed25519 approval-request key."""
AGENT = AgentCredential.issue(RING, "refund-bot-1", "support", "production", "team-a")
REVIEWER = SignerCredential.issue(RING, "reviewer", "alice")
PARTITIONS = (1, 3, 6, 12)
REQUEST_ID = "6f1c2b7e-3d4a-4c5b-9e8f-0a1b2c3d4e5f"
INTENT = (
    '{"schema_version":1,"request_id":"' + REQUEST_ID + '","agent_id":"refund-bot-1",'
    '"agent_role":"support","agent_owner":"team-a","environment":"production","tool":"payments.refund",'
    '"action":"create","target":"payments:customer/c-42","params":{"amount":250.5,"currency":"EUR",'
    '"note":"caf\\u00e9 \u00e9t\u00e9"},"occurred_at":"2030-01-02T03:04:05.678Z","labels":{}}'
)
KEYS = ("refund-bot-1", "a", "agent-\u00e9", "0", "x" * 40)


def headers(*pairs: tuple[str, bytes]) -> list[list[str]]:
    """Record headers as [name, value] pairs (values are ASCII)."""
    return [[name, value.decode()] for name, value in pairs]


def intent_vector() -> dict[str, Any]:
    value = INTENT.encode()
    intent = Intent.model_validate_json(value)
    return {
        "topic": "<prefix>.intents", "key": AGENT.agent_id, "value": INTENT, "digest": intent.digest(),
        "partitions": {str(n): partition_for(AGENT.agent_id, n) for n in PARTITIONS},
        "headers": headers((AUTH_HEADER, AGENT.authenticate(value))),
    }


def decision_vector(digest: str) -> dict[str, Any]:
    """The pending decision the workers publish for the intent, authenticated with the agent's key."""
    value = (
        '{"schema_version":1,"request_id":"' + REQUEST_ID + '","agent_id":"refund-bot-1",'
        '"decision":"REQUIRE_APPROVAL","reasons":["refund-review: refunds over 100 need a review"],'
        '"rules":["refund-review"],"determining":["refund-review"],"risk":{"score":0.2,"factors":[]},'
        '"policy_version":"sha256:0123456789abcdef","policy_name":"payments",'
        '"decided_at":"2030-01-02T03:04:05.912Z","final":false,'
        '"approval_deadline_at":"2030-01-02T03:19:05.912Z","approved_by":[],"intent_digest":"' + digest + '"}'
    )
    return {"topic": "<prefix>.decisions", "key": AGENT.agent_id, "value": value,
            "headers": headers((AUTH_HEADER, authenticator(AGENT.key_id, AGENT.key, value.encode())))}


def request_vector(digest: str) -> dict[str, Any]:
    """The approval request the workers publish, signed with their Ed25519 key."""
    value = (
        '{"schema_version":1,"request_id":"' + REQUEST_ID + '","intent":' + INTENT + ','
        '"intent_digest":"' + digest + '","reasons":["refund-review: refunds over 100 need a review"],'
        '"rules":["refund-review"],"determining":["refund-review"],"risk":{"score":0.2,"factors":[]},'
        '"policy_version":"sha256:0123456789abcdef","approver_group":"payments","quorum":1,'
        '"channel":"#payments","created_at":"2030-01-02T03:04:05.912Z",'
        '"deadline_at":"2030-01-02T03:19:05.912Z"}'
    )
    return {"topic": "<prefix>.approval-requests", "key": REQUEST_ID, "value": value,
            "headers": headers((AUTH_HEADER, SIGNER.sign(value.encode())))}


def verdict_vector(digest: str) -> dict[str, Any]:
    """A reviewer's approval, signed with the reviewer's credential."""
    value = (
        '{"schema_version":1,"request_id":"' + REQUEST_ID + '","intent_digest":"' + digest + '",'
        '"reviewer":"alice","verdict":"APPROVE","reason":null,"source":"api",'
        '"decided_at":"2030-01-02T03:06:00.000Z"}'
    )
    return {"topic": "<prefix>.approvals", "key": REQUEST_ID, "value": value,
            "headers": headers(*REVIEWER.headers(value.encode()))}


def vectors() -> dict[str, Any]:
    intent = intent_vector()
    digest = intent["digest"]
    return {
        "about": "sluicegate wire test vectors; see schemas/vectors/README.md. Test keys only.",
        "keys": {"ring": str(RING), "request_signer": str(SIGNER), "request_public_key": SIGNER.public,
                 "agent_credential": str(AGENT), "reviewer_credential": str(REVIEWER)},
        "intent": intent,
        "decision": decision_vector(digest),
        "approval_request": request_vector(digest),
        "verdict": verdict_vector(digest),
        "partitioner": [{"key": key, "murmur2": murmur2(key.encode()),
                         "partitions": {str(n): partition_for(key, n) for n in PARTITIONS}} for key in KEYS],
    }


def render() -> str:
    return json.dumps(vectors(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
