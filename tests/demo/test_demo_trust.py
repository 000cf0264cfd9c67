"""The demo's credentials: keys under the run's directory, one credential per agent and reviewer, and a
simulated reviewer that answers only requests the workers signed."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas import ApprovalRequest, Intent
from sluicegate.cli.trust import KeyDirError
from sluicegate.demo.fleet import build_fleet
from sluicegate.demo.reviewer import REVIEWER_GROUPS, SimulatedReviewer
from sluicegate.demo.trust import DemoTrust
from sluicegate.trust import (
    AUTH_HEADER,
    KeyRing,
    RequestSigner,
    TrustError,
    agent_names,
    check,
    split_authenticator,
    verify_signed,
)

NOW = datetime(2031, 1, 6, 10, tzinfo=UTC)


def test_the_run_keys_are_private_and_feed_the_worker(tmp_path: Path) -> None:
    trust = DemoTrust.create(tmp_path / "trust")
    for name in ("keyring", "signing-key"):
        assert stat.S_IMODE((tmp_path / "trust" / name).stat().st_mode) == 0o600
    env = trust.worker_env()
    assert str(KeyRing.parse(env["SLUICEGATE_TRUST_KEYS"])) == str(trust.keys.ring)
    signer = RequestSigner.parse(env["SLUICEGATE_TRUST_SIGNING_KEY"])
    assert signer.public == env["SLUICEGATE_TRUST_PUBLIC_KEY"]
    assert env["SLUICEGATE_TRUST_OFF"] == "0"
    with pytest.raises(KeyDirError, match="refusing to overwrite"):
        DemoTrust.create(tmp_path / "trust")


def test_every_agent_and_reviewer_has_its_own_credential(tmp_path: Path) -> None:
    trust = DemoTrust.create(tmp_path / "trust")
    agents = build_fleet(40)
    credentials = trust.agents(agents)
    assert [c.agent_id for c in credentials] == [a.agent_id for a in agents]
    ring = trust.keys.ring
    for agent, credential in zip(agents, credentials, strict=True):
        assert (credential.role, credential.environment, credential.owner) == (
            agent.role, agent.environment, agent.owner)
        key_id, mac = split_authenticator(credential.authenticate(b"an intent"))
        names = agent_names(agent.agent_id, agent.role, agent.environment, agent.owner)
        check(ring.derive(key_id, "agent", *names), b"an intent", mac)  # what the worker does
    reviewers = trust.reviewers
    assert set(reviewers.credentials) == {name for members in REVIEWER_GROUPS.values() for name in members}
    lena = reviewers.credentials["lena"]
    assert verify_signed(ring, lena.headers(b"v"), b"v", ("reviewer",)) == ("reviewer", "lena")
    assert verify_signed(ring, trust.publisher.headers(b"p"), b"p", ("publisher",)) == ("publisher", "demo")


def _request(intent: Intent) -> ApprovalRequest:
    return ApprovalRequest(request_id=intent.request_id, intent=intent, intent_digest=intent.digest(),
                           approver_group="on-call", created_at=NOW, deadline_at=NOW + timedelta(minutes=15))


def test_the_simulated_reviewer_answers_only_signed_requests(tmp_path: Path) -> None:
    trust = DemoTrust.create(tmp_path / "trust")
    reviewer = SimulatedReviewer("unused:9092", None, trust=trust.reviewers)  # type: ignore[arg-type]
    intent = Intent.model_validate({
        "request_id": "6f0c6a52-4a39-4c11-9d25-1d1c2bb1f1a1", "agent_id": "devops-0001",
        "agent_role": "devops",
        "environment": "production", "tool": "deploy.release", "action": "execute", "target": "k8s:prod",
        "params": {"service": "api"}, "occurred_at": NOW.isoformat(),
    })
    request = _request(intent)
    value = request.model_dump_json().encode()
    reviewer._verify(request, [(AUTH_HEADER, trust.keys.signer.sign(value))], value)
    with pytest.raises(TrustError):  # unsigned
        reviewer._verify(request, [], value)
    with pytest.raises(TrustError):  # signed by someone else's key
        reviewer._verify(request, [(AUTH_HEADER, RequestSigner.generate().sign(value))], value)
    shown = request.model_copy(update={"intent": intent.model_copy(update={"params": {"service": "db"}})})
    shown_value = shown.model_dump_json().encode()
    with pytest.raises(TrustError, match="digest"):  # signed, but its params are not what the digest binds
        reviewer._verify(shown, [(AUTH_HEADER, trust.keys.signer.sign(shown_value))], shown_value)
