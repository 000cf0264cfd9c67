"""``sluicegate audit verify``: recompute every audit chain from ClickHouse and say where one breaks.

Per chain (:mod:`streams.audit_chain`), in sequence order: each record must follow the one before it
(its ``chain_prev`` is that record's hash, recomputed from the stored columns with
:mod:`consumers.audit_columns`), sequence numbers have no gaps, the chain starts at 1 (unless
``--since`` cuts it), every checkpoint is signed by the workers' key and names the hash the records
give at its sequence number, and the newest record is covered by a checkpoint (a chain that stopped
without one, or whose newest records are gone, is reported). Several rows at one place of a chain
that are the same row (a batch the sink stored twice) count once; different ones mean a forged row.
Only the first break of each chain is reported: everything after it is unproven.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from consumers.audit_columns import GENESIS, HASHED, TIMES, checkpoint_message, link
from consumers.audit_store import AuditStore
from infra.clickhouse.migrate import check_identifier
from sluicegate.trust import AUTH_HEADER, TrustError, verify_request

DEFAULT_GRACE: Final = timedelta(minutes=1)
"""Records this recent may still wait for their checkpoint (the workers sign every few seconds)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken chain: where, and what is wrong."""

    chain_id: str
    seq: int
    event_id: str
    what: str

    def __str__(self) -> str:
        named = f" (event {self.event_id})" if self.event_id else ""
        return f"{self.chain_id} seq {self.seq}{named}: {self.what}"


@dataclass(slots=True)
class Verification:
    """What ``audit verify`` found."""

    chains: int = 0
    records: int = 0
    checkpoints: int = 0
    unchained: int = 0
    pending: int = 0
    """Records newer than the grace that no checkpoint covers yet (not a failure)."""
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class _Row:
    seq: int
    prev: str
    event_id: str
    values: tuple[Any, ...]
    time_ms: int

    def digest(self, prev: str) -> str:
        return link(prev, self.values)


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    seq: int
    hash: str
    signature: str


def _select(column: str) -> str:
    if column in TIMES:
        return f"toUnixTimestamp64Milli({column})"
    if column == "request_id":
        return "replaceAll(toString(request_id), '-', '')"
    return column


class Verifier:
    """Verifies the chains of one audit database."""

    def __init__(self, store: AuditStore, database: str, public_key: str | None,
                 grace: timedelta = DEFAULT_GRACE) -> None:
        self.store, self.db = store, check_identifier(database)
        self.public_key, self.grace = public_key, grace

    def run(self, since: datetime | None = None, until: datetime | None = None) -> Verification:
        started = time.monotonic()
        result = Verification()
        window, params = self._window(since, until)
        bounds = self.store.query(
            f"SELECT chain_id, min(chain_seq), max(chain_seq) FROM {self.db}.audit_events "
            f"WHERE chain_id != '' AND event_type != 'checkpoint' {window} "
            "GROUP BY chain_id ORDER BY chain_id",
            params).rows
        checkpoints = self._checkpoints()
        for chain_id in sorted(set(checkpoints) - {str(b[0]) for b in bounds}):
            if since is None and until is None:  # signed records, none left
                top = max(checkpoints[chain_id], key=lambda c: c.seq)
                result.problems.append(Problem(chain_id, 1, "", f"records 1 to {top.seq} are missing: a "
                                               "checkpoint covers them, the audit holds none"))
        for chain_id, low, high in bounds:
            result.chains += 1
            rows = self._rows(str(chain_id), int(low), int(high))
            result.records += len(rows)
            points = checkpoints.get(str(chain_id), [])
            result.checkpoints += len(points)
            self._chain(str(chain_id), rows, points, since is None, until is None, result)
        result.unchained = int(self.store.query(
            f"SELECT count() FROM {self.db}.audit_events WHERE chain_id = '' {window}", params).rows[0][0])
        result.problems += self._forged_copies(window, params)
        result.seconds = time.monotonic() - started
        return result

    @staticmethod
    def _window(since: datetime | None, until: datetime | None) -> tuple[str, dict[str, Any]]:
        clauses, params = "", {}
        if since is not None:
            clauses += " AND event_time >= fromUnixTimestamp64Milli(%(since)s, 'UTC')"
            params["since"] = int(since.timestamp() * 1000)
        if until is not None:
            clauses += " AND event_time < fromUnixTimestamp64Milli(%(until)s, 'UTC')"
            params["until"] = int(until.timestamp() * 1000)
        return clauses, params

    def _checkpoints(self) -> dict[str, list[_Checkpoint]]:
        found: dict[str, list[_Checkpoint]] = defaultdict(list)
        sql = ("SELECT DISTINCT chain_id, chain_seq, chain_hash, chain_signature"
               f" FROM {self.db}.audit_events"
               " WHERE event_type = 'checkpoint' ORDER BY chain_id, chain_seq")
        for chain_id, seq, digest, signature in self.store.query(sql).rows:
            found[str(chain_id)].append(_Checkpoint(int(seq), str(digest), str(signature)))
        return found

    def _rows(self, chain_id: str, low: int, high: int) -> dict[int, list[_Row]]:
        columns = ", ".join(_select(c) for c in HASHED)
        rows = self.store.query(
            f"SELECT DISTINCT chain_seq, chain_prev, event_id, toUnixTimestamp64Milli(event_time), {columns} "
            f"FROM {self.db}.audit_events WHERE chain_id = %(chain)s AND event_type != 'checkpoint' "
            "AND chain_seq BETWEEN %(low)s AND %(high)s ORDER BY chain_seq",
            {"chain": chain_id, "low": low, "high": high}).rows
        by_seq: dict[int, list[_Row]] = defaultdict(list)
        for seq, prev, event_id, time_ms, *values in rows:
            by_seq[int(seq)].append(_Row(int(seq), str(prev), str(event_id), tuple(values), int(time_ms)))
        return by_seq

    def _signed(self, chain_id: str, point: _Checkpoint) -> bool:
        if self.public_key is None:
            return True
        try:
            verify_request(self.public_key, [(AUTH_HEADER, point.signature.encode())],
                           checkpoint_message(chain_id, point.seq, point.hash))
        except TrustError:
            return False
        return True

    def _chain(self, chain_id: str, by_seq: dict[int, list[_Row]], points: list[_Checkpoint],
               from_start: bool, to_end: bool, result: Verification) -> None:
        """Walk one chain; the first problem found is recorded."""
        for point in points:
            if not self._signed(chain_id, point):
                result.problems.append(Problem(chain_id, point.seq, "", "a checkpoint's signature does not "
                                               "verify with the workers' public key (forged checkpoint)"))
                return
        signed: dict[int, set[str]] = defaultdict(set)
        for point in points:
            signed[point.seq].add(point.hash)
        seqs = sorted(by_seq)
        first = seqs[0]
        if from_start and first != 1:
            result.problems.append(Problem(chain_id, 1, "", f"records 1 to {first - 1} are missing "
                                           f"(deleted): the chain's oldest record is seq {first}"))
            return
        prev = GENESIS if from_start else by_seq[first][0].prev
        last: _Row | None = None
        for seq in range(first, seqs[-1] + 1):
            rows = by_seq.get(seq)
            if not rows:
                named = f" after event {last.event_id}" if last else ""
                result.problems.append(Problem(chain_id, seq, "", f"missing (deleted){named}: the next "
                                               f"record present is seq {min(s for s in seqs if s > seq)}"))
                return
            problem = self._step(chain_id, seq, rows, prev, last, by_seq.get(seq + 1, []), signed)
            if isinstance(problem, Problem):
                result.problems.append(problem)
                return
            last, prev = problem
        assert last is not None
        covered = max(signed, default=0)
        if to_end and covered > last.seq:
            result.problems.append(Problem(
                chain_id, last.seq + 1, "", f"records {last.seq + 1} to {covered} are missing (the newest "
                f"were dropped): a checkpoint covers seq {covered}, the chain ends at seq {last.seq} "
                f"(event {last.event_id})"))
        elif to_end and covered < last.seq:
            recent = datetime.now(UTC) - self.grace
            if last.time_ms >= int(recent.timestamp() * 1000):
                result.pending += last.seq - covered
            else:
                result.problems.append(Problem(
                    chain_id, covered + 1, "", f"records {covered + 1} to {last.seq} are covered by no "
                    f"checkpoint: the chain stopped without one (its newest rows may have been dropped)"))

    def _step(self, chain_id: str, seq: int, rows: list[_Row], prev: str, last: _Row | None,
              following: list[_Row], signed: dict[int, set[str]]) -> tuple[_Row, str] | Problem:
        """The genuine record at ``seq`` (following ``prev``) and its hash, or the problem there."""
        if len(rows) == 1 and rows[0].prev == prev:  # the common case: one hash per record
            digest = rows[0].digest(prev)
            if signed.get(seq) and digest not in signed[seq]:
                return Problem(chain_id, seq, rows[0].event_id, "edited: the record no longer hashes to what "
                               "the workers' checkpoint signed")
            return rows[0], digest
        linked = [row for row in rows if row.prev == prev]
        if not linked:
            row = rows[0]
            if last is not None and _intact(row, following, signed.get(seq)):
                return Problem(chain_id, seq - 1, last.event_id, "edited: the record no longer hashes to "
                               f"what the next record (seq {seq}, event {row.event_id}) names")
            return Problem(chain_id, seq, row.event_id, "does not follow the record before it: moved, "
                           "reordered or forged")
        named = [row for row in linked if _intact(row, following, signed.get(seq))]
        row = named[0] if len(named) == 1 else linked[0]
        others = [other for other in rows if other is not row]
        if others:
            return Problem(chain_id, seq, others[0].event_id, "a forged row stands at this place of the "
                           f"chain besides the genuine record (event {row.event_id})")
        return row, row.digest(prev)

    def _forged_copies(self, window: str, params: dict[str, Any]) -> list[Problem]:
        """Unchained rows that claim the event id of a chained record (a forged duplicate)."""
        rows = self.store.query(
            f"SELECT event_id, any(chain_id), any(chain_seq) FROM {self.db}.audit_events "
            f"WHERE event_id IN (SELECT event_id FROM {self.db}.audit_events WHERE chain_id = '' {window}) "
            "AND chain_id != '' GROUP BY event_id ORDER BY event_id LIMIT 100", params).rows
        what = "an unchained row claims this record's event id (a forged duplicate of the original)"
        return [Problem(str(chain), int(seq), str(event_id), what) for event_id, chain, seq in rows]


def _intact(row: _Row, following: list[_Row], signed: set[str] | None) -> bool:
    """Whether the next record or a checkpoint names ``row``'s hash (over its own link)."""
    digest = row.digest(row.prev)
    return any(nxt.prev == digest for nxt in following) or bool(signed and digest in signed)
