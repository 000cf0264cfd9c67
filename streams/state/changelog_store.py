"""A deciding stage's table without faust: one rocksdict database per partition, a compacted changelog.

It keeps faust's table model (str keys to bytes values, every write also sent to partition N of the
changelog topic, ``<app id>-agent-state-changelog`` or ``-shared-state-changelog``, a worker that takes
a partition over rebuilds it from that partition) and faust's record format, so a deployment keeps its
state across the change. What it drops is faust's per-write machinery (an event context per key, a
buffered send with a callback, the persisted offset written per record), which cost more than the
decision itself.

Consistency with the changelog: one order, safe at any instruction. Writes are held in memory (per
partition, read through) and queued for the changelog; the runner sends those records, flushes the
producer, commits the input offsets, and only then calls :meth:`ChangelogStore.checkpoint`, which writes
the held writes and the changelog offset they reach to RocksDB in one atomic batch. So a database is
never ahead of its changelog: after a crash at any point it holds exactly the state at its checkpoint,
and :meth:`ChangelogStore.restore` reads the changelog from there to its end (what this worker sent
after the checkpoint, and what other workers wrote while they owned the partition). Without a checkpoint
it can trust (none, outside the changelog, or older than :data:`MAX_CHECKPOINT_AGE_MS`), the partition
is rebuilt from the whole changelog. That is the worker's one recovery rule.
"""

from __future__ import annotations

import heapq
import logging
import shutil
import time
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from rocksdict import Options, Rdict, WriteBatch

from sluicegate.trust import TrustError
from streams.state.changelog_seal import ChangelogSeal

log = logging.getLogger(__name__)
CHECKPOINT_KEY = b"\x00sluicegate\x00changelog-offset"
"""Where a database keeps the changelog offset it is complete up to (not a valid table key)."""
RESTORE_BATCH = 2_000
_ABSENT = b"\x00absent"
"""Marks a key with no held write (held values are bytes or None)."""
MAX_CHECKPOINT_AGE_MS = 20 * 3_600_000
"""An older checkpoint is not restored from: compaction may since have dropped tombstones written after
it (Kafka keeps them ``delete.retention.ms``, 24 h by default), and the deleted keys would come back."""


def changelog_topic(app_id: str, table: str) -> str:
    """The changelog topic of ``table`` (faust's naming, so both read the same topic)."""
    return f"{app_id}-{table}-changelog"


class ChangelogStore(MutableMapping[str, bytes]):
    """The partitions of one table this worker owns; reads and writes go to the :meth:`use`\\ d one.

    Writes are applied to the database at once and queued for the changelog; the owner sends
    :meth:`take_writes` (in order) before the decision that follows from them. With a ``seal`` (trust
    on), each record sent carries :meth:`headers`; restore skips records without a valid seal and
    rewrites those sealed under an older key of the ring, so that key can be retired once every
    partition has been rebuilt.
    """

    def __init__(self, directory: Path, topic: str, seal: ChangelogSeal | None = None) -> None:
        self.directory = directory
        self.topic = topic
        self.seal = seal
        self.refused = 0
        """Changelog records restore skipped because no worker sealed them."""
        self.dbs: dict[int, Rdict] = {}
        self.partition = -1
        self.db: Rdict | None = None
        self.held: dict[int, dict[bytes, bytes | None]] = {}
        """Per partition: writes not yet in its database (None: a delete), until the next checkpoint."""
        self.overlay: dict[bytes, bytes | None] = {}
        """The held writes of the partition in use."""
        self.writes: list[tuple[int, bytes, bytes | None]] = []

    # -- partitions ----------------------------------------------------------------------------------

    def path(self, partition: int) -> Path:
        return self.directory / f"{partition}.db"

    def open(self, partition: int) -> Rdict:
        """The database of ``partition`` (opened, or created empty)."""
        db = self.dbs.get(partition)
        if db is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            options = Options(raw_mode=True)
            options.create_if_missing(True)
            db = self.dbs[partition] = Rdict(str(self.path(partition)), options)
        return db

    def use(self, partition: int) -> None:
        """Direct reads and writes to ``partition`` (which must be open)."""
        self.partition, self.db = partition, self.dbs[partition]
        self.overlay = self.held.setdefault(partition, {})

    def close(self, partition: int) -> None:
        """Close ``partition``'s database; writes held since its checkpoint are dropped (a restore
        reads them back from the changelog)."""
        db = self.dbs.pop(partition, None)
        if db is not None:
            db.close()
        self.held.pop(partition, None)
        if self.partition == partition:
            self.partition, self.db, self.overlay = -1, None, {}

    def discard(self, partition: int) -> None:
        """Drop ``partition``'s database: it will be rebuilt from the whole changelog."""
        self.close(partition)
        shutil.rmtree(self.path(partition), ignore_errors=True)

    def close_all(self) -> None:
        for partition in list(self.dbs):
            self.close(partition)

    def checkpoint(self, partition: int, offset: int) -> None:
        """Write the held writes of ``partition`` and the changelog ``offset`` they reach to its
        database, atomically. Only once the changelog records up to ``offset`` are flushed."""
        batch = WriteBatch(raw_mode=True)
        held = self.held.get(partition, {})
        for key, value in held.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(CHECKPOINT_KEY, f"{offset}:{time.time_ns() // 1_000_000}".encode())
        self.open(partition).write(batch)
        held.clear()

    def checkpointed(self, partition: int) -> int | None:
        """The changelog offset ``partition``'s database is complete up to (None: unknown, or too old
        to restore from, see :data:`MAX_CHECKPOINT_AGE_MS`)."""
        raw = self.open(partition).get(CHECKPOINT_KEY)
        if raw is None:
            return None
        offset, _, written_ms = bytes(raw).decode().partition(":")
        if time.time_ns() // 1_000_000 - int(written_ms or 0) > MAX_CHECKPOINT_AGE_MS:
            return None
        return int(offset)

    def keys_with_prefix(self, prefix: str) -> Iterator[str]:
        """The keys starting with ``prefix`` in the partition in use, in order."""
        start = prefix.encode()
        held = sorted(key for key in self.overlay if key.startswith(start))
        stored = self._stored_with_prefix(start)
        for key in heapq.merge(stored, held):
            if self.overlay.get(key, b"") is not None:  # held deletes hide stored keys
                yield key.decode()

    def _stored_with_prefix(self, start: bytes) -> Iterator[bytes]:
        for key in self._db().keys(from_key=start):
            raw = bytes(key)  # type: ignore[arg-type]
            if not raw.startswith(start):
                return
            if raw not in self.overlay and raw != CHECKPOINT_KEY:
                yield raw

    async def restore(self, consumer: AIOKafkaConsumer, partitions: list[int],
                      abort: Callable[[], bool] = lambda: False) -> int:
        """Bring the databases of ``partitions`` up to their changelog's end; the records applied.

        ``consumer`` is a group-less consumer used for nothing else meanwhile, with no automatic offset
        reset (records that vanish under it are an error, not a silent skip). A database whose
        checkpoint is outside the changelog (the topic was recreated or truncated), or too old, is
        rebuilt. Stops early, leaving the checkpoints where they were, once ``abort()`` is true.
        """
        if not partitions:
            return 0
        tps = [TopicPartition(self.topic, p) for p in partitions]
        for partition in partitions:  # nothing held: the changelog is read from the checkpoint
            self.held.pop(partition, None)
        begins, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        todo: dict[TopicPartition, int] = {}
        consumer.assign(tps)
        for tp in tps:
            checkpoint = self.checkpointed(tp.partition)
            start = None if checkpoint is None else checkpoint + 1
            if start is None or not begins[tp] <= start <= ends[tp]:  # none to trust: rebuild
                if start is not None:  # the changelog was recreated or truncated
                    log.warning("%s[%d]: checkpoint %s is outside the changelog (%d..%d): rebuilding",
                                self.topic, tp.partition, checkpoint, begins[tp], ends[tp])
                self.discard(tp.partition)
                self.open(tp.partition)
                start = begins[tp]
            if start < ends[tp]:
                consumer.seek(tp, start)
                todo[tp] = ends[tp]
        applied = 0
        reseal: dict[int, dict[bytes, bytes | None]] = {}
        while todo and not abort():
            fetched = await consumer.getmany(*todo, timeout_ms=1_000, max_records=RESTORE_BATCH)
            for tp, records in fetched.items():
                batch = WriteBatch(raw_mode=True)
                stale = reseal.setdefault(tp.partition, {})
                for record in records:
                    if record.offset >= todo[tp]:
                        continue
                    key_id = self._sealed_by(tp.partition, record)
                    if key_id is None:
                        continue
                    if record.value is None:
                        batch.delete(record.key)
                    else:
                        batch.put(record.key, record.value)
                    applied += 1
                    if self.seal is not None and key_id != self.seal.key_id:
                        stale[record.key] = record.value
                    else:
                        stale.pop(record.key, None)
                self.open(tp.partition).write(batch)
            for tp in list(todo):  # compaction leaves gaps: the position tells when the end is read
                if await consumer.position(tp) >= todo[tp]:
                    self.checkpoint(tp.partition, todo.pop(tp) - 1)
        consumer.pause(*tps)  # fetch nothing until the next restore assigns again
        for partition, stale in reseal.items():  # sealed under an older key: rewritten under the current
            self.writes += [(partition, key, value) for key, value in stale.items()]
        return applied

    def _sealed_by(self, partition: int, record: Any) -> str | None:
        """The id of the key a worker sealed ``record`` with ("" with trust off); None: restore must
        skip it, no worker wrote it."""
        if self.seal is None:
            return ""
        try:
            return self.seal.check(self.topic, partition, record)
        except TrustError as exc:
            self.refused += 1
            log.warning("security: %s[%d]@%d skipped on restore, not written by a worker (%s)",
                        self.topic, partition, record.offset, exc)
            return None

    def headers(self, partition: int, key: bytes, value: bytes | None) -> list[tuple[str, bytes]] | None:
        """The headers of the changelog record of one write (None: trust off)."""
        return None if self.seal is None else self.seal.headers(self.topic, partition, key, value)

    # -- the table ------------------------------------------------------------------------------------

    def take_writes(self) -> list[tuple[int, bytes, bytes | None]]:
        """The (partition, key, value or None for a delete) written since the last call, in order."""
        writes, self.writes = self.writes, []
        return writes

    def _db(self) -> Rdict:
        if self.db is None:
            raise RuntimeError(f"{self.topic}: no partition in use")
        return self.db

    def _get(self, raw: bytes) -> bytes | None:
        held = self.overlay.get(raw, _ABSENT)
        if held is not _ABSENT:
            return held
        value = self._db().get(raw)
        return None if value is None else bytes(value)

    def __getitem__(self, key: str) -> bytes:
        value = self._get(key.encode())
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        value = self._get(key.encode())
        return default if value is None else value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._get(key.encode()) is not None

    def __setitem__(self, key: str, value: bytes) -> None:
        raw = key.encode()
        self._db()  # a partition must be in use
        self.overlay[raw] = value
        self.writes.append((self.partition, raw, value))

    def __delitem__(self, key: str) -> None:
        raw = key.encode()
        if self._get(raw) is None:
            raise KeyError(key)
        self.overlay[raw] = None
        self.writes.append((self.partition, raw, None))

    def __iter__(self) -> Iterator[str]:
        return self.keys_with_prefix("")

    def __len__(self) -> int:
        return sum(1 for _ in self)
