"""The hash-chained audit: every audit record a stage writes gets its place in its partition's chain.

One chain per partition of each stage (``<table>/<partition>/<epoch>``), so writing and verifying stay
as parallel as deciding. A record carries its sequence number and the hash of the chain's previous
record (:class:`schemas.audit.ChainLink`); the hash covers the record's stored columns
(:mod:`consumers.audit_columns`), so ``sluicegate audit verify`` recomputes it from ClickHouse. Every
``every`` records or ``interval_s`` seconds the worker signs the chain's head with the workers' Ed25519
key (a ``checkpoint`` audit record): a chain rewritten from some record on, or cut short, no longer
matches what the workers signed.

Crash safety: an audit record is sent only once it is durable in the stage's changelog. Chaining a
record writes it to an outbox in the stage's table (``chain|o|<seq>``, its hash and its bytes), whose
writes the runner sends to the changelog before anything else; after the runner's next flush
(:meth:`Chained.flushed`) the record is durable and goes out with the stage's next outputs or tick;
after the flush that follows, its outbox entry is deleted (the newest is kept: it is the chain's head).
A worker that takes a partition over (after a crash, or a rebalance) restores the outbox with the table
and sends again whatever it holds; copies that did reach the audit are the same bytes, which the audit
table stores once. So a record is never in the audit with a sequence number the chain could later give
to another record, whatever instruction a crash interrupts. Re-handling a redelivered message may
audit its event again: that copy gets a place of its own in the chain (same event id, next seq).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiokafka.structs import ConsumerRecord

from consumers.audit_columns import (
    GENESIS,
    HASHED,
    chain_request_id,
    checkpoint_message,
    hashed_values,
    link,
    row,
)
from schemas.audit import AuditEventType, AuditRecord, ChainCheckpoint, ChainLink
from sluicegate.trust import RequestSigner
from streams.redaction import Redactor
from streams.runtime.runner import Stage
from streams.stages.outputs import Route, Send, now_ms, utc
from streams.state.changelog_store import ChangelogStore

log = logging.getLogger(__name__)
OUTBOX_PREFIX = "chain|o|"
CHECKPOINT_EVERY = 1_000
"""Records between two checkpoints of a chain, at most."""
CHECKPOINT_INTERVAL_S = 5.0
"""Seconds between a record and the checkpoint that covers it, at most (once the partition is idle)."""
_NO_SOURCE = ("", 0, 0)
_TAIL = b',"chain":null}'

_CHAIN_ID, _CHAIN_SEQ = HASHED.index("chain_id"), HASHED.index("chain_seq")


def _key(seq: int) -> str:
    return f"{OUTBOX_PREFIX}{seq:020d}"


def _placed(values: list[Any], position: ChainLink) -> list[Any]:
    """The hashed values of a record's row with its place in the chain: what they are for the record
    with ``chain=position`` (the only hashed columns its chain sets), without copying the record."""
    values[_CHAIN_ID], values[_CHAIN_SEQ] = position.chain_id, position.seq
    return values


@dataclass(slots=True)
class _Chain:
    """One partition's chain as this worker holds it."""

    chain_id: str
    seq: int = 0
    hash: str = GENESIS
    written: list[tuple[int, str, bytes]] = field(default_factory=list)
    """Chained since the last flush: (seq, hash, record) not yet known to be in the changelog."""
    ready: list[tuple[int, str, bytes]] = field(default_factory=list)
    """Durable, to send."""
    sent: list[int] = field(default_factory=list)
    """Sent; their outbox entries go after the next flush (but the head's)."""
    durable: tuple[int, str] = (0, GENESIS)
    signed: int = 0
    signed_at: float = field(default_factory=time.monotonic)


class AuditChain:
    """The chains of one stage's partitions, over the stage's table."""

    def __init__(self, store: ChangelogStore, signer: RequestSigner | None, redactor: Redactor | None = None,
                 every: int = CHECKPOINT_EVERY, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        self.store, self.signer, self.redactor = store, signer, redactor
        self.every, self.interval_s = every, interval_s
        self.base = store.topic.removesuffix("-changelog")
        self.chains: dict[int, _Chain] = {}

    # -- partitions -----------------------------------------------------------------------------------

    def took_over(self, partition: int) -> list[Send]:
        """A partition just restored (its table in use): its chain's head, and its outbox sent again."""
        entries = [(int(key[len(OUTBOX_PREFIX):]), self.store[key])
                   for key in list(self.store.keys_with_prefix(OUTBOX_PREFIX))]
        if not entries:
            self.chains[partition] = _Chain(f"{self.base}/{partition}/{now_ms()}")
            return []
        chain_id = AuditRecord.model_validate_json(entries[-1][1][64:]).chain
        assert chain_id is not None
        seq, value = entries[-1]
        chain = self.chains[partition] = _Chain(chain_id.chain_id, seq, value[:64].decode())
        chain.ready = [(s, v[:64].decode(), v[64:]) for s, v in entries]
        chain.durable = (chain.seq, chain.hash)
        chain.signed_at = 0.0  # sign what was restored at once
        return self._due(chain)

    def gave_up(self, partition: int) -> None:
        self.chains.pop(partition, None)

    def flushed(self, partition: int) -> None:
        """Everything sent so far was delivered: chained records are durable, sent ones can go."""
        chain = self.chains.get(partition)
        if chain is None:
            return
        for seq in chain.sent:
            if seq != chain.seq:
                self.store.pop(_key(seq), None)
        chain.sent = [seq for seq in chain.sent if seq == chain.seq]
        if chain.written:
            chain.durable = chain.written[-1][:2]
            chain.ready += chain.written
            chain.written = []

    # -- records --------------------------------------------------------------------------------------

    def route(self, partition: int, sends: list[Send]) -> list[Send]:
        """``sends`` with their audit records chained (held back until durable), and the durable
        records (and a checkpoint) due."""
        chain = self.chains.get(partition)
        if chain is None:
            raise RuntimeError(f"{self.base}[{partition}]: no chain (the partition was not taken over)")
        out = [self._shown(send) for send in sends if send.route is not Route.AUDIT]
        for send in sends:
            if send.route is Route.AUDIT:
                self._append(chain, send)
        return out + self._due(chain)

    def _shown(self, send: Send) -> Send:
        """An approval request as reviewers may see it (sensitive params redacted)."""
        if send.route is not Route.APPROVAL_REQUESTS or self.redactor is None:
            return send
        value = self.redactor.request(send.value)
        return send if value is send.value else replace(send, value=value)

    def tick(self, partition: int) -> list[Send]:
        """The durable records and a checkpoint due, on an idle partition."""
        chain = self.chains.get(partition)
        return [] if chain is None else self._due(chain)

    def _append(self, chain: _Chain, send: Send) -> None:
        record = send.record if send.record is not None else AuditRecord.model_validate_json(send.value)
        value = send.value
        if self.redactor is not None:
            prepared = self.redactor(record)
            if prepared is not record:
                record, value = prepared, prepared.model_dump_json().encode()
        seq = chain.seq + 1
        position = ChainLink(chain_id=chain.chain_id, seq=seq, prev=chain.hash)
        digest = link(chain.hash, _placed(hashed_values(row(record, _NO_SOURCE)), position))
        if value.endswith(_TAIL):
            value = value[:-len(_TAIL)] + b',"chain":' + position.model_dump_json().encode() + b"}"
        else:
            value = record.model_copy(update={"chain": position}).model_dump_json().encode()
        self.store[_key(seq)] = digest.encode() + value
        chain.seq, chain.hash = seq, digest
        chain.written.append((seq, digest, value))

    def _due(self, chain: _Chain) -> list[Send]:
        key = chain.chain_id.encode()
        sends = [Send(Route.AUDIT, key, value) for _, _, value in chain.ready]
        chain.sent += [seq for seq, _, _ in chain.ready]
        chain.ready = []
        seq, digest = chain.durable
        late = time.monotonic() - chain.signed_at >= self.interval_s
        if seq > chain.signed and (seq - chain.signed >= self.every or late):
            sends.append(self._checkpoint(chain.chain_id, seq, digest))
            chain.signed, chain.signed_at = seq, time.monotonic()
        return sends

    def _checkpoint(self, chain_id: str, seq: int, digest: str) -> Send:
        message = checkpoint_message(chain_id, seq, digest)
        signature = "" if self.signer is None else self.signer.sign(message).decode()
        record = AuditRecord(
            event_id=f"checkpoint:{chain_id}:{seq}", event_type=AuditEventType.CHECKPOINT,
            event_time=utc(now_ms()), request_id=chain_request_id(chain_id),
            checkpoint=ChainCheckpoint(chain_id=chain_id, seq=seq, hash=digest, signature=signature),
        )
        return Send(Route.AUDIT, chain_id.encode(), record.model_dump_json().encode())


class Chained:
    """A stage as the runner drives it (:class:`streams.runtime.runner.Stage`), its audit chained."""

    def __init__(self, inner: Stage, chain: AuditChain) -> None:
        self.inner, self.chain = inner, chain
        self.name, self.store, self.sources = inner.name, inner.store, inner.sources

    def handle(self, record: ConsumerRecord[Any, Any]) -> list[Send]:
        return self.chain.route(self.store.partition, self.inner.handle(record))

    async def took_over(self, partition: int, abort: Callable[[], bool]) -> list[Send] | None:
        sends = await self.inner.took_over(partition, abort)
        if sends is None:
            return None
        self.store.use(partition)
        restored = self.chain.took_over(partition)
        return restored + self.chain.route(partition, sends)

    def gave_up(self, partition: int) -> None:
        self.inner.gave_up(partition)
        self.chain.gave_up(partition)

    def tick(self, partition: int, now_ms: int) -> list[Send]:
        return self.chain.route(partition, self.inner.tick(partition, now_ms))

    def flushed(self, partition: int) -> None:
        self.inner.flushed(partition)
        self.store.use(partition)
        self.chain.flushed(partition)


def chain_stages(stages: tuple[Stage, ...], signer: RequestSigner | None,
                 redactor: Redactor | None = None, **options: Any) -> tuple[Stage, ...]:
    """Every stage with its audit chained and redacted, and its approval requests redacted
    (``options``: ``every``, ``interval_s``)."""
    return tuple(Chained(stage, AuditChain(stage.store, signer, redactor, **options)) for stage in stages)
