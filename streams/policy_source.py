"""Policy hot reload: every worker reads the whole policies topic (no consumer group).

The latest acceptable policy under :data:`schemas.ACTIVE_POLICY_KEY` is in force; one that is not
acceptable is logged, counted (``sluicegate_policy_loads_total{result=...}``) and ignored: the last
good one stays. The switch is one reference assignment, read once per intent by the decide stage, so
it is atomic between two intents. Recently used versions are kept so a second stage decides with the
same version as the first, even across a switch.

**Signed policies.** A published record's value is the policy text after one envelope line, a YAML
comment ``#sluicegate-policy {json}`` holding the publish ``seq`` (one more than the topic's latest,
on every publish), the policy's ``serial`` (the publisher's revision number; publishing one not above
the latest is a rollback, refused unless asked for), the publisher, the time, the version and the
previous version. The record is signed with the publisher's credential (``sg-auth``/``sg-signer``
headers: HMAC-SHA256 over the whole value), so the envelope is covered by the MAC and the value is
still a plain YAML policy for any reader. With a key ring (trust on), a worker accepts a record only
when it verifies as a publisher's, its envelope names that publisher, and its ``seq`` is above the
``seq`` in force: a replayed older record (a looser policy someone signed once) is refused as
``stale``. Without a ring (trust off) every valid policy is taken as is.

**Shadow policies.** A record under :data:`SHADOW_POLICY_KEY` whose envelope says ``role: shadow``
is a candidate: workers evaluate it beside the active policy on every intent, with state of its own,
and audit its decision (:mod:`streams.stages.shadow`), but never enforce it. It is published, signed
and numbered (the topic's one ``seq``) like any policy; the role is in the signed envelope, so a
shadow cannot be re-keyed into the active policy. :func:`promote` publishes the shadow's text as the
active policy (``role: promoted``), which ends the shadow.

**Audit.** The worker writes the ``policy_published`` audit event when it installs a policy, and a
``security`` event when it refuses one for its signature or its seq. The event id, time and content
depend only on the record (topic, partition, offset, envelope), so the N workers (and a restarted
worker reading the topic again) write the same event and the audit store keeps one. The worker, not
the CLI, writes it because that is what took effect: a publisher key can be used from any Kafka
client, and a refused policy must be audited by whoever refuses it. ``docs/security.md`` has more.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.kafka.admin import MIN_INSYNC_REPLICAS, TopicSpec, ensure_topics
from schemas.audit import AuditEventType, AuditRecord
from schemas.topics import ACTIVE_POLICY_KEY
from sluicegate.settings import PLAINTEXT, KafkaOptions
from sluicegate.trust import SIGNER_HEADER, KeyRing, SignerCredential, TrustError, header, verify_signed
from streams.engine import CompiledPolicy, PolicyError, compile_policy
from streams.runtime.kafka import reader

if TYPE_CHECKING:
    from streams.metrics import Metrics

log = logging.getLogger(__name__)
KEEP_VERSIONS = 8
ENVELOPE_PREFIX = b"#sluicegate-policy "
"""The first line of a published policy: this, a JSON object, a newline."""
MAX_MESSAGE_BYTES = 2 * 1024 * 1024
POLICIES_TOPIC = {"cleanup.policy": "delete", "retention.ms": "-1",
                  "max.message.bytes": str(MAX_MESSAGE_BYTES)}
"""Every policy ever published is kept: compaction would let a later forged record under the same key
evict the last signed one, and a worker started afterwards would find no policy to trust."""
"""The policies topic's record size (a policy is at most 1 MiB, plus its envelope)."""
Headers = Sequence[tuple[str, bytes]]
SHADOW_POLICY_KEY = b"shadow"
"""Key of a shadow policy on the policies topic (:data:`schemas.ACTIVE_POLICY_KEY`: the enforced one)."""
ACTIVE, SHADOW, PROMOTED = "active", "shadow", "promoted"
ROLES = (ACTIVE, SHADOW, PROMOTED)


class PolicyPublishError(Exception):
    """A policy that may not be published as asked (no credential, a rollback not asked for, ...)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a published policy record says about itself (covered by the publisher's MAC)."""

    seq: int
    """The topic's publish counter: one more than the latest record's, on every publish."""
    serial: int
    """The policy's revision as its publisher numbers it; lower than the latest only in a rollback."""
    publisher: str
    """The publisher's name (``""``: published unsigned, trust off)."""
    published_at_ms: int
    version: str
    previous: str | None
    """The version of the latest record on the topic when this one was published."""
    rollback: bool = False
    role: str = ACTIVE
    """What the record makes of its policy: :data:`ACTIVE` (enforced), :data:`SHADOW` (evaluated beside
    the active one, never enforced) or :data:`PROMOTED` (the shadow made active: enforced, and no more
    shadow). Covered by the MAC, so a signed shadow cannot be re-keyed into an active policy."""

    def line(self) -> bytes:
        fields = asdict(self)
        if self.role == ACTIVE:  # records written before shadows existed read the same
            del fields["role"]
        return ENVELOPE_PREFIX + json.dumps(fields, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def split(cls, value: bytes) -> tuple[Envelope | None, bytes]:
        """(envelope, policy text) of a record value; (None, value) when it has no envelope line.
        Raises ValueError for an envelope line that cannot be read."""
        if not value.startswith(ENVELOPE_PREFIX):
            return None, value
        first, _, body = value.partition(b"\n")
        try:
            fields = json.loads(first[len(ENVELOPE_PREFIX):])
            envelope = cls(
                seq=_int(fields["seq"]), serial=_int(fields["serial"]), publisher=str(fields["publisher"]),
                published_at_ms=_int(fields["published_at_ms"]), version=str(fields["version"]),
                previous=None if fields.get("previous") is None else str(fields["previous"]),
                rollback=fields.get("rollback") is True, role=_role(fields.get("role", ACTIVE)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"unreadable envelope: {exc}") from None
        return envelope, body


def _role(value: Any) -> str:
    if value not in ROLES:
        raise ValueError(f"role {value!r} is not one of {', '.join(ROLES)}")
    return str(value)


def role_of_key(key: bytes | None) -> str | None:
    """The role a record's key claims (None: not a policy record)."""
    return SHADOW if key == SHADOW_POLICY_KEY else ACTIVE if key == ACTIVE_POLICY_KEY else None


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a whole number")
    return value


def _record_uuid(topic: str, partition: int, offset: int) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"sluicegate:policy:{topic}:{partition}:{offset}")


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class PolicySource:
    """The policy in force, fed from the policies topic.

    ``ring``: the deployment's key ring; with it (trust on) only policies signed by a publisher, newer
    than the one in force, are accepted. ``audit_topic``: where :meth:`run` writes the policy audit
    events (None: they are only kept in :attr:`audit_events` until read).
    """

    def __init__(self, bootstrap: str, topic: str, metrics: Metrics, ring: KeyRing | None = None,
                 audit_topic: str | None = None, *, options: KafkaOptions = PLAINTEXT) -> None:
        self.bootstrap, self.options = bootstrap, options
        self.topic = topic
        self.metrics = metrics
        self.ring = ring
        self.audit_topic = audit_topic
        self.current: CompiledPolicy | None = None
        self.shadow: CompiledPolicy | None = None
        """The shadow policy: evaluated beside :attr:`current` on every intent, never enforced (None:
        none). Published under :data:`SHADOW_POLICY_KEY`; a promotion or an active publish of the same
        version ends it."""
        self.seq = 0
        """The ``seq`` of the record in force (0: none, or one without an envelope)."""
        self.caught_up = asyncio.Event()
        self.audit_events: list[AuditRecord] = []
        """Audit records not yet written (:meth:`run` sends and clears them)."""
        self._versions: OrderedDict[str, CompiledPolicy] = OrderedDict()

    def version(self, version: str) -> CompiledPolicy | None:
        """A recently active policy by its version."""
        return self._versions.get(version)

    def offer(self, value: bytes, offset: int, headers: Headers = (), timestamp_ms: int | None = None,
              partition: int = 0, key: bytes = ACTIVE_POLICY_KEY) -> bool:
        """Check, compile and install one published policy record (``key``: active or shadow). True
        when installed."""
        where = (partition, offset, timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
        try:
            envelope, body = Envelope.split(value)
        except ValueError as exc:
            return self._refuse("unverified", str(exc), where)
        role = envelope.role if envelope is not None else role_of_key(key)
        if role is None or (role == SHADOW) != (key == SHADOW_POLICY_KEY):
            return self._refuse("unverified", f"a {role} policy under the key {key!r}", where)
        if self.ring is not None:
            refusal = self._verify(value, headers, envelope)
            if refusal is not None:
                return self._refuse(*refusal, where)
        source = f"{self.topic}@{offset}"
        try:
            policy = compile_policy(body.decode("utf-8"), source)
        except (PolicyError, UnicodeDecodeError) as exc:
            log.error("ignored invalid policy %s (keeping %s):\n%s", source, self._in_force(), exc)
            self.metrics.policy_loads.labels("invalid").inc()
            return False
        except Exception:  # a policy must never stop the reader: keep the last good one
            log.exception("ignored a policy that failed to compile: %s (keeping %s)", source,
                          self._in_force())
            self.metrics.policy_loads.labels("invalid").inc()
            return False
        if role == SHADOW:
            self._install_shadow(policy, source, envelope)
        else:
            self._install(policy, source, envelope)
        self._audit_installed(policy, envelope, where, role)
        return True

    def _verify(self, value: bytes, headers: Headers, envelope: Envelope | None) -> tuple[str, str] | None:
        """(result, why) when a record may not be taken with trust on; None when it may."""
        assert self.ring is not None
        if header(headers) is None and header(headers, SIGNER_HEADER) is None:
            return "unsigned", "unsigned: trust is on, a policy must be signed by a publisher"
        try:
            _, name = verify_signed(self.ring, headers, value, ("publisher",))
        except TrustError as exc:
            return "unverified", f"signature does not verify: {exc}"
        if envelope is None:
            return "unverified", f"signed by publisher {name!r} but without a seq (publish with sluicegate)"
        if envelope.publisher != name:
            return "unverified", (f"signed by publisher {name!r}, but its envelope names "
                                  f"{envelope.publisher!r}")
        if envelope.seq <= self.seq:
            return "stale", (f"seq {envelope.seq} by publisher {name!r} is not above the seq in force "
                             f"({self.seq}): an older record published again")
        return None

    def _in_force(self) -> str:
        return self.current.version if self.current else "none"

    def _install_shadow(self, policy: CompiledPolicy, source: str, envelope: Envelope | None) -> None:
        self.shadow = policy
        if envelope is not None:
            self.seq = envelope.seq
        self.metrics.policy_loads.labels("loaded").inc()
        log.info("shadow policy %s (%s) evaluated beside %s from %s", policy.name, policy.version,
                 self._in_force(), source)

    def _install(self, policy: CompiledPolicy, source: str, envelope: Envelope | None) -> None:
        self.current = policy
        if self.shadow is not None and (self.shadow.version == policy.version or (
                envelope is not None and envelope.role == PROMOTED)):
            log.info("shadow policy %s ends: %s is enforced", self.shadow.version, policy.version)
            self.shadow = None
        if envelope is not None:
            self.seq = envelope.seq
        self._versions[policy.version] = policy
        self._versions.move_to_end(policy.version)
        while len(self._versions) > KEEP_VERSIONS:
            self._versions.popitem(last=False)
        self.metrics.policy_loads.labels("loaded").inc()
        self.metrics.policy.info({"version": policy.version, "name": policy.name, "source": source})
        by = f", serial {envelope.serial}, seq {envelope.seq}, by {envelope.publisher or '(unsigned)'}" \
            if envelope else ""
        log.info("policy %s (%s) in force from %s%s", policy.name, policy.version, source, by)

    def _refuse(self, result: str, why: str, where: tuple[int, int, int]) -> bool:
        partition, offset, timestamp_ms = where
        source = f"{self.topic}@{offset}"
        log.error("ignored policy %s (%s; keeping %s): %s", source, result, self._in_force(), why)
        self.metrics.policy_loads.labels(result).inc()
        request_id = _record_uuid(self.topic, partition, offset)
        self.audit_events.append(AuditRecord(
            event_id=f"policy:{self.topic}:{partition}:{offset}:security", event_type=AuditEventType.SECURITY,
            event_time=_utc(timestamp_ms), request_id=request_id,
            note=f"policy record {source} refused ({result}): {why}"[:2000],
        ))
        return False

    def _audit_installed(self, policy: CompiledPolicy, envelope: Envelope | None,
                         where: tuple[int, int, int], role: str) -> None:
        partition, offset, timestamp_ms = where
        details: dict[str, Any] = {"policy": policy.name, "version": policy.version,
                                   "source": f"{self.topic}@{offset}"}
        if role != ACTIVE:
            details["role"] = role
        if envelope is not None:
            details |= {"publisher": envelope.publisher or None, "previous": envelope.previous,
                        "serial": envelope.serial, "seq": envelope.seq, "rollback": envelope.rollback,
                        "published_at": _utc(envelope.published_at_ms).isoformat()}
        self.audit_events.append(AuditRecord(
            event_id=f"policy:{self.topic}:{partition}:{offset}:published",
            event_type=AuditEventType.POLICY_PUBLISHED,
            event_time=_utc(envelope.published_at_ms if envelope is not None else timestamp_ms),
            request_id=_record_uuid(self.topic, partition, offset),
            note=json.dumps(details, separators=(",", ":"))[:2000],
        ))

    async def run(self) -> None:
        """Read the topic from the beginning forever; ``caught_up`` is set at the initial end."""
        consumer = reader(self.bootstrap, self.options)
        producer = None
        if self.audit_topic is not None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", **self.options)
        await consumer.start()
        try:
            if producer is not None:
                await producer.start()
            partitions = [TopicPartition(self.topic, p)
                          for p in sorted(await self._partitions(consumer))]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            pending = {tp for tp, end in ends.items() if end > 0}
            if not pending:
                self.caught_up.set()
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        if role_of_key(record.key) is not None and record.value is not None:
                            self.offer(record.value, record.offset, record.headers, record.timestamp,
                                       record.partition, record.key)
                    if tp in pending and await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
                await self._write_audit(producer)
                if not pending:
                    self.caught_up.set()
        finally:
            await consumer.stop()
            if producer is not None:
                await producer.stop()

    async def _write_audit(self, producer: AIOKafkaProducer | None) -> None:
        events, self.audit_events = self.audit_events, []
        if producer is None or self.audit_topic is None:
            return
        for event in events:
            await producer.send_and_wait(self.audit_topic, event.model_dump_json().encode(),
                                         key=str(event.request_id).encode())

    async def _partitions(self, consumer: AIOKafkaConsumer) -> set[int]:
        for _ in range(100):
            found = consumer.partitions_for_topic(self.topic)
            if found:
                return set(found)
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"policies topic {self.topic} not found")


# -- publishing ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Published:
    """A policy as published: the compiled policy and its envelope."""

    policy: CompiledPolicy
    envelope: Envelope
    latest: Envelope | None
    """The envelope of the record it followed (None: the topic had none)."""


async def read_records(bootstrap: str, topic: str, *,
                       options: KafkaOptions = PLAINTEXT) -> list[tuple[bytes, Headers]]:
    """The value and headers of every active-policy record on ``topic``, in log order (the topic has
    one partition)."""
    return [(value, headers) for key, value, headers in await read_keyed(bootstrap, topic, options=options)
            if key == ACTIVE_POLICY_KEY]


async def read_keyed(bootstrap: str, topic: str, *,
                     options: KafkaOptions = PLAINTEXT) -> list[tuple[bytes, bytes, Headers]]:
    """The key, value and headers of every policy record (active and shadow) on ``topic``, in log
    order."""
    consumer = reader(bootstrap, options)
    await consumer.start()
    try:
        found = consumer.partitions_for_topic(topic)
        if not found:
            await consumer._client.force_metadata_update()
            found = consumer.partitions_for_topic(topic) or set()
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[tuple[bytes, bytes, Headers]] = []
        pending = {tp for tp, end in ends.items() if end > 0}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=1000)
            for batch in batches.values():
                records += [(record.key, record.value, tuple(record.headers)) for record in batch
                            if role_of_key(record.key) is not None and record.value is not None]
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return records
    finally:
        await consumer.stop()


async def read_latest(bootstrap: str, topic: str) -> tuple[bytes, Headers] | None:
    """The value and headers of the last active-policy record on ``topic`` (None: there is none)."""
    records = await read_records(bootstrap, topic)
    return records[-1] if records else None


def latest_envelope(records: Sequence[tuple[bytes, Headers]]) -> Envelope | None:
    """What a publish follows: the envelope with the highest seq on the topic (the one workers have in
    force, unless it is forged). A publisher cannot verify other publishers' records (it holds only its
    own key), so records without an envelope are skipped, and one with a higher seq or serial than any
    real one can only make it number higher or ask for --allow-rollback; workers are not misled by it.
    With no envelope at all, the last record counts as seq and serial 0, with its version."""
    best: Envelope | None = None
    for value, _ in records:
        try:
            envelope, _body = Envelope.split(value)
        except ValueError:
            continue
        if envelope is not None and (best is None or envelope.seq >= best.seq):
            best = envelope
    if best is not None or not records:
        return best
    try:
        version = compile_policy(records[-1][0].decode("utf-8"), "latest").version
    except (PolicyError, UnicodeDecodeError):
        version = ""
    return Envelope(seq=0, serial=0, publisher="", published_at_ms=0, version=version, previous=None)


def next_envelope(
    policy: CompiledPolicy, latest: Envelope | None, publisher: str, *, serial: int | None = None,
    allow_rollback: bool = False, now_ms: int | None = None,
) -> Envelope:
    """The envelope of a publish after ``latest``. Raises PolicyPublishError for a serial not above the
    latest one unless ``allow_rollback``."""
    latest_seq = latest.seq if latest else 0
    latest_serial = latest.serial if latest else 0
    chosen = latest_serial + 1 if serial is None else serial
    if chosen < 1:
        raise PolicyPublishError(f"serial {chosen}: serials start at 1")
    rollback = chosen <= latest_serial
    if rollback and not allow_rollback:
        assert latest is not None
        by = f" by {latest.publisher}" if latest.publisher else ""
        at = f" at {_utc(latest.published_at_ms):%Y-%m-%d %H:%M:%S} UTC" if latest.published_at_ms else ""
        raise PolicyPublishError(
            f"serial {chosen} is not above the latest published serial {latest_serial} "
            f"({latest.version or 'unknown version'}{by}{at}): a rollback; pass --allow-rollback to "
            "publish it"
        )
    return Envelope(
        seq=latest_seq + 1, serial=chosen, publisher=publisher,
        published_at_ms=now_ms if now_ms is not None else int(time.time() * 1000),
        version=policy.version, previous=(latest.version or None) if latest else None, rollback=rollback,
    )


async def publish(bootstrap: str, topic: str, text: str, source: str = "<policy>",
                  credential: SignerCredential | None = None, *, serial: int | None = None,
                  allow_rollback: bool = False, role: str = ACTIVE, options: KafkaOptions = PLAINTEXT,
                  replication: tuple[int, int] = (1, 1)) -> Published:
    """Validate ``text`` (raises PolicyError), number it after the topic's latest record (raises
    PolicyPublishError for a rollback not allowed), sign it with ``credential`` (None: unsigned, for
    workers with trust off) and publish it as the active policy, or with ``role`` :data:`SHADOW` as the
    shadow policy (numbered like a publish, never a rollback), or :data:`PROMOTED` (see
    :func:`promote`). Every record takes the next ``seq`` of the topic, whatever its role. ``options``:
    the cluster's security; ``replication``: replication factor and min.insync.replicas of the topic
    when this call creates it."""
    policy = compile_policy(text, source)
    if credential is not None and credential.kind != "publisher":
        raise PolicyPublishError(f"a {credential.kind} credential cannot publish policies")
    factor, min_insync = replication
    configs = {**POLICIES_TOPIC, MIN_INSYNC_REPLICAS: str(min_insync)}
    await ensure_topics(bootstrap, [TopicSpec(topic, 1, factor, configs)], options=options)
    keyed = await read_keyed(bootstrap, topic, options=options)
    latest = latest_envelope([(value, headers) for key, value, headers in keyed if key == ACTIVE_POLICY_KEY])
    envelope = next_envelope(policy, latest, credential.name if credential else "", serial=serial,
                             allow_rollback=allow_rollback or role == SHADOW)
    top = latest_envelope([(value, headers) for _, value, headers in keyed])
    envelope = replace(envelope, seq=max(envelope.seq, (top.seq if top else 0) + 1), role=role)
    value = envelope.line() + text.encode("utf-8")
    headers = credential.headers(value) if credential is not None else []
    key = SHADOW_POLICY_KEY if role == SHADOW else ACTIVE_POLICY_KEY
    await _send(bootstrap, topic, value, headers, key, options)
    return Published(policy, envelope, latest)


def shadow_in_force(keyed: Sequence[tuple[bytes, bytes, Headers]]) -> tuple[Envelope | None, bytes] | None:
    """The (envelope, text) of the shadow the workers evaluate, as far as a publisher can tell: the
    last shadow record, unless an active record after it enforces its version or promotes (None)."""
    found: tuple[Envelope | None, bytes] | None = None
    for key, value, _ in keyed:
        try:
            envelope, body = Envelope.split(value)
        except ValueError:
            continue
        if key == SHADOW_POLICY_KEY:
            found = (envelope, body)
        elif found is not None and envelope is not None and (
                envelope.role == PROMOTED or envelope.version == _version_of(found)):
            found = None
    return found


def _version_of(shadow: tuple[Envelope | None, bytes]) -> str:
    envelope, body = shadow
    if envelope is not None:
        return envelope.version
    try:
        return compile_policy(body.decode("utf-8"), "shadow").version
    except (PolicyError, UnicodeDecodeError):
        return ""


async def promote(bootstrap: str, topic: str, credential: SignerCredential | None = None, *,
                  expect_version: str | None = None, options: KafkaOptions = PLAINTEXT) -> Published:
    """Make the shadow policy the active one: publish its text again as active, role
    :data:`PROMOTED` (signed with ``credential``, the next seq and serial; the workers audit it as any
    publish and stop evaluating a shadow). Raises PolicyPublishError when there is no shadow, or it is
    not ``expect_version``."""
    shadow = shadow_in_force(await read_keyed(bootstrap, topic, options=options))
    if shadow is None:
        raise PolicyPublishError("no shadow policy is published (sluicegate policy publish FILE --shadow)")
    version = _version_of(shadow)
    if expect_version is not None and version != expect_version:
        raise PolicyPublishError(f"the shadow policy is {version or 'unreadable'}, not {expect_version}")
    try:
        text = shadow[1].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyPublishError(f"the shadow policy cannot be read: {exc}") from None
    return await publish(bootstrap, topic, text, f"shadow {version}", credential, role=PROMOTED,
                         options=options)


async def publish_policy(bootstrap: str, topic: str, text: str, source: str = "<policy>",
                         credential: SignerCredential | None = None, *,
                         options: KafkaOptions = PLAINTEXT) -> CompiledPolicy:
    """Validate ``text`` (raises PolicyError) and publish it as the active policy, signed with
    ``credential`` when given (workers with trust on need it); returns the compiled policy."""
    return (await publish(bootstrap, topic, text, source, credential, options=options)).policy


async def publish_raw(bootstrap: str, topic: str, text: str | bytes, headers: Headers = ()) -> None:
    """Publish a value as the active policy as it is, unvalidated and unnumbered (tests of the workers'
    guard: invalid, unsigned, forged or replayed policies)."""
    await _send(bootstrap, topic, text.encode("utf-8") if isinstance(text, str) else text, list(headers))


async def _send(bootstrap: str, topic: str, value: bytes, headers: list[tuple[str, bytes]],
                key: bytes = ACTIVE_POLICY_KEY, options: KafkaOptions = PLAINTEXT) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=MAX_MESSAGE_BYTES,
                                **options)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


__all__ = [
    "ACTIVE",
    "PROMOTED",
    "SHADOW",
    "SHADOW_POLICY_KEY",
    "Envelope",
    "PolicyPublishError",
    "PolicySource",
    "Published",
    "latest_envelope",
    "next_envelope",
    "promote",
    "publish",
    "publish_policy",
    "publish_raw",
    "read_keyed",
    "read_latest",
    "read_records",
    "role_of_key",
    "shadow_in_force",
]
