"""Signed policies without a broker: what a worker's PolicySource takes, refuses and audits, and how
publishes are numbered (seq, serial, rollback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.audit import AuditEventType
from sluicegate.trust import AUTH_HEADER, SIGNER_HEADER, KeyRing, SignerCredential
from streams.engine import compile_policy
from streams.metrics import Metrics
from streams.policy_source import Envelope, PolicyPublishError, PolicySource, latest_envelope, next_envelope

POLICIES = Path(__file__).resolve().parents[2] / "policies" / "examples"
LOOSE = "policy: loose\ndefault: ALLOW\n"
STRICT = ("policy: strict\ndefault: BLOCK\n"
          "rules:\n  - {id: refunds, match: {tool: payments.refund}, decision: ALLOW}\n")
T_MS = 1_796_000_000_000


class Publisher:
    """Makes policy records as `sluicegate policy publish` does, tracking the topic's latest envelope."""

    def __init__(self, credential: SignerCredential | None) -> None:
        self.credential = credential
        self.latest: Envelope | None = None
        self.offset = 0

    def record(self, text: str, *, serial: int | None = None, allow_rollback: bool = False,
               credential: SignerCredential | None = None) -> tuple[bytes, list[tuple[str, bytes]], int]:
        signer = credential or self.credential
        envelope = next_envelope(compile_policy(text), self.latest, signer.name if signer else "",
                                 serial=serial, allow_rollback=allow_rollback, now_ms=T_MS + self.offset)
        self.latest = envelope
        value = envelope.line() + text.encode()
        headers = signer.headers(value) if signer else []
        self.offset += 1
        return value, headers, self.offset - 1


def loads(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value("sluicegate_policy_loads_total", {"result": result})
    return value or 0.0


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.generate("k1")


@pytest.fixture
def publisher(ring: KeyRing) -> Publisher:
    return Publisher(SignerCredential.issue(ring, "publisher", "ci"))


def source(ring: KeyRing | None) -> PolicySource:
    return PolicySource("unused:9092", "p.policies", Metrics(), ring=ring)


def test_a_signed_policy_is_installed_and_audited(ring: KeyRing, publisher: Publisher) -> None:
    first, second = source(ring), source(ring)
    value, headers, offset = publisher.record(STRICT)
    assert first.offer(value, offset, headers, T_MS)
    assert second.offer(value, offset, headers, T_MS + 5)  # another worker, reading it later
    assert first.current is not None and first.current.name == "strict" and first.seq == 1
    assert loads(first.metrics, "loaded") == 1
    [event] = first.audit_events
    assert event == second.audit_events[0]  # the same event from every worker: stored once
    assert event.event_type is AuditEventType.POLICY_PUBLISHED
    details = json.loads(event.note or "")
    assert details["publisher"] == "ci" and details["version"] == first.current.version
    assert details["previous"] is None and details["serial"] == 1 and details["seq"] == 1
    assert details["published_at"].startswith("2026-")
    assert event.event_time.timestamp() * 1000 == T_MS

    value, headers, offset = publisher.record(LOOSE)
    assert first.offer(value, offset, headers, T_MS)
    details = json.loads(first.audit_events[-1].note or "")
    assert details["previous"] == compile_policy(STRICT).version and details["serial"] == 2


@pytest.mark.parametrize(
    "case", ["unsigned", "foreign key", "tampered", "reviewer", "renamed", "no envelope"],
)
def test_a_policy_that_does_not_verify_is_ignored(ring: KeyRing, publisher: Publisher, case: str) -> None:
    worker = source(ring)
    good = publisher.record(STRICT)
    assert worker.offer(good[0], good[2], good[1], T_MS)
    in_force = worker.current
    value, headers, offset = publisher.record(LOOSE)
    expected = "unverified"
    if case == "unsigned":
        headers, expected = [], "unsigned"
    elif case == "foreign key":  # a publisher credential of another deployment
        headers = SignerCredential.issue(KeyRing.generate("k1"), "publisher", "ci").headers(value)
    elif case == "tampered":  # signed, then loosened on the way
        value = value.replace(b"default: ALLOW", b"default: ALLOW ")
    elif case == "reviewer":  # a reviewer's key is no publisher's
        headers = SignerCredential.issue(ring, "reviewer", "ci").headers(value)
    elif case == "renamed":  # the signer header names someone else
        headers = [(AUTH_HEADER, dict(headers)[AUTH_HEADER]), (SIGNER_HEADER, b"publisher:lena")]
    elif case == "no envelope":  # signed by hand, without a seq: cannot be ordered
        value = LOOSE.encode()
        headers = publisher.credential.headers(value) if publisher.credential else []
    assert not worker.offer(value, offset, headers, T_MS + 1)
    assert worker.current is in_force and worker.seq == 1
    assert loads(worker.metrics, expected) == 1 and loads(worker.metrics, "loaded") == 1
    event = worker.audit_events[-1]
    assert event.event_type is AuditEventType.SECURITY and f"({expected})" in (event.note or "")


def test_the_envelope_must_name_the_signer(ring: KeyRing) -> None:
    lena = SignerCredential.issue(ring, "publisher", "lena")
    envelope = next_envelope(compile_policy(LOOSE), None, "ci", now_ms=T_MS)
    value = envelope.line() + LOOSE.encode()
    worker = source(ring)
    assert not worker.offer(value, 0, lena.headers(value), T_MS)
    assert loads(worker.metrics, "unverified") == 1 and worker.current is None


def test_a_replayed_older_policy_is_refused_as_stale(ring: KeyRing, publisher: Publisher) -> None:
    worker = source(ring)
    loose = publisher.record(LOOSE)
    strict = publisher.record(STRICT)
    assert worker.offer(loose[0], loose[2], loose[1], T_MS)
    assert worker.offer(strict[0], strict[2], strict[1], T_MS)
    # Someone with produce rights copies the old loose record, headers and all, to the end of the topic.
    assert not worker.offer(loose[0], 7, loose[1], T_MS)
    assert worker.current is not None and worker.current.name == "strict"
    assert loads(worker.metrics, "stale") == 1


def test_rollback_needs_to_be_asked_for_and_is_then_taken(ring: KeyRing, publisher: Publisher) -> None:
    worker = source(ring)
    for text in (LOOSE, STRICT):
        value, headers, offset = publisher.record(text)
        assert worker.offer(value, offset, headers, T_MS)
    with pytest.raises(PolicyPublishError, match=r"serial 1 is not above the latest published serial 2 .*ci"):
        publisher.record(LOOSE, serial=1)
    value, headers, offset = publisher.record(LOOSE, serial=1, allow_rollback=True)
    envelope, _ = Envelope.split(value)
    assert envelope is not None and envelope.rollback and envelope.serial == 1 and envelope.seq == 3
    assert worker.offer(value, offset, headers, T_MS)
    assert worker.current is not None and worker.current.name == "loose"
    # The next publish numbers after the highest seq, and its serial after the rollback's.
    value, headers, offset = publisher.record(STRICT)
    envelope, _ = Envelope.split(value)
    assert envelope is not None and (envelope.seq, envelope.serial, envelope.rollback) == (4, 2, False)
    assert worker.offer(value, offset, headers, T_MS)


def test_an_explicit_serial_above_the_latest_is_no_rollback(publisher: Publisher) -> None:
    publisher.record(LOOSE)
    value, _, _ = publisher.record(STRICT, serial=100)
    envelope, _ = Envelope.split(value)
    assert envelope is not None and (envelope.serial, envelope.seq, envelope.rollback) == (100, 2, False)
    with pytest.raises(PolicyPublishError, match="serial 100 is not above"):
        publisher.record(LOOSE, serial=100)


def test_rotation_keeps_old_publisher_credentials_until_retired(ring: KeyRing, publisher: Publisher) -> None:
    rotated = ring.rotated("k2")
    worker = source(rotated)
    value, headers, offset = publisher.record(STRICT)  # issued under k1
    assert worker.offer(value, offset, headers, T_MS)
    retired = source(rotated.without("k1"))
    assert not retired.offer(value, offset, headers, T_MS)
    assert loads(retired.metrics, "unverified") == 1
    fresh = SignerCredential.issue(rotated, "publisher", "ci")
    value, headers, offset = publisher.record(LOOSE, credential=fresh)
    assert retired.offer(value, offset, headers, T_MS)


def test_trust_off_takes_unsigned_policies_with_or_without_an_envelope() -> None:
    worker = source(None)
    assert worker.offer(STRICT.encode(), 0, (), T_MS)
    unsigned = Publisher(None)
    value, headers, _ = unsigned.record(LOOSE)
    assert headers == [] and worker.offer(value, 1, headers, T_MS)
    assert worker.current is not None and worker.current.name == "loose"
    details = json.loads(worker.audit_events[-1].note or "")
    assert details["publisher"] is None and details["serial"] == 1


def test_an_invalid_signed_policy_keeps_the_last_good_one(ring: KeyRing, publisher: Publisher) -> None:
    worker = source(ring)
    value, headers, offset = publisher.record(STRICT)
    assert worker.offer(value, offset, headers, T_MS)
    envelope = next_envelope(compile_policy(LOOSE), publisher.latest, "ci", now_ms=T_MS)
    bad = envelope.line() + b"policy: broken\nrules: [{id: 1}]\n"
    assert publisher.credential is not None
    assert not worker.offer(bad, 9, publisher.credential.headers(bad), T_MS)
    assert worker.current is not None and worker.current.name == "strict"
    assert loads(worker.metrics, "invalid") == 1


def test_an_unreadable_envelope_is_refused(ring: KeyRing) -> None:
    worker = source(None)
    assert not worker.offer(b'#sluicegate-policy {"seq": "x"}\n' + LOOSE.encode(), 0, (), T_MS)
    assert loads(worker.metrics, "unverified") == 1


def test_errors_in_a_published_policy_name_the_lines_of_the_file(caplog: pytest.LogCaptureFixture) -> None:
    worker = source(None)
    envelope = next_envelope(compile_policy(LOOSE), None, "", now_ms=T_MS)
    assert not worker.offer(envelope.line() + b"policy: p\nrules:\n  - id: a\n    decision: NOPE\n", 3)
    assert worker.current is None
    assert "p.policies@3:4: " in caplog.text  # line 4 of the file, not of the record


def test_example_policies_round_trip_through_the_envelope(ring: KeyRing, publisher: Publisher) -> None:
    worker = source(ring)
    for path in sorted(POLICIES.glob("*.yaml")):
        text = path.read_text()
        value, headers, offset = publisher.record(text)
        assert worker.offer(value, offset, headers, T_MS), path
        assert worker.current is not None and worker.current.version == compile_policy(text).version


def test_a_publish_follows_the_highest_seq_not_the_last_record(publisher: Publisher) -> None:
    """A forged or unsigned record appended after the real ones does not reset the numbering."""
    records = [publisher.record(text)[:2] for text in (LOOSE, STRICT)]
    records.append((LOOSE.encode(), []))  # unsigned, no envelope
    records.append((b'#sluicegate-policy {"seq": "garbage"}\n' + LOOSE.encode(), []))
    latest = latest_envelope(records)
    assert latest is not None and (latest.seq, latest.serial) == (2, 2)
    assert latest_envelope([]) is None
    legacy = latest_envelope([(STRICT.encode(), [])])  # a topic written before envelopes
    assert legacy is not None and legacy.seq == 0 and legacy.version == compile_policy(STRICT).version
