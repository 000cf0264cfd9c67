"""Budget leases: a shared limit's owner lends a deciding partition a slice of its budget, so intents
under a fleet-wide limit are decided where they arrive (one hop) while the limit stays exact.

The arithmetic here is pure (window states in, numbers out); :class:`HolderLeases` and
:class:`OwnerLeases` keep it in the stages' tables. docs/leases.md has the design and the proof.

A lease covers the event times ``[start, end]`` (shorter than the limit's window) with ``amount``
(actions for a count limit, a sum for a sum limit). The owner counts it at *both* ends: every window
that overlaps the span contains one of them, so whatever the holder spends inside the span is counted
in every window that could hold it. When the holder returns the lease (after its span, by its clock)
with what it spent, the owner replaces the two lease entries by those uses, each at its event time:
exact again. Nothing depends on the workers' clocks agreeing: the owner never takes a lease back
without its holder's return.
"""

from __future__ import annotations

import math
import struct
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from streams.engine import WindowChange
from streams.engine.state import WindowState
from streams.state.table_state import RECEIPT_PREFIX, BytesTable, TableState, keys_with_prefix

LEASE_MS = 2_000
"""The shortest event-time span a lease covers after the intent that asked for it; an eighth of the
limit's window, up to :data:`MAX_SPAN_MS`, when that is longer (see :func:`span_of`)."""
LEAD_MS = LEASE_MS // 4
"""...and before it: a quarter of that (intents of many agents reach a partition out of event-time
order, and a partition with a backlog decides intents from a while ago)."""
MAX_SPAN_MS = 60_000
CLOSE_AFTER_MS = 2 * LEASE_MS
"""A holder returns a lease this long after it received it, by its own clock (when is a matter of
waste only: a lease returned is never spent again)."""
MAX_WAIT_MS = 5_000
"""An intent waits this long at most for the answer to an ask on a partition that is caught up (whose
ask may be lost, or its owner away); then it takes the hops. Under a backlog it waits for the answer."""
ASK_TIMEOUT_MS = 30_000
"""An ask without an answer for this long is forgotten (a later intent asks again): long, since an
ask waits behind the forwards queued at the key's partition, and a late grant is still worth having."""
MIN_WINDOW_FACTOR = 4
"""Leases only for limits whose window is at least this many lease spans."""
FIRST_WANT = 64
"""A first ask wants this many actions (times the intent's value, for a sum)."""
GROWTH = 4
"""An ask wants this many times what the key's latest lease spent (asked at half spent: it doubles
while the rate outgrows the leases), and at least what the rate spent since a lease was received
would spend over the time a lease is held."""
MIN_SHARE = 2
"""Leases only for limits whose sustained rate gives every partition this many actions per span."""
HOLDER_PREFIX = "L|"
CLOSED_PREFIX = "Lc|"
"""The leases a partition returned last, per key (a redelivered grant of one is not returned again)."""
USES_PREFIX = "u|"
WAITING_PREFIX = "Lw|"
"""Intents waiting on a partition for the answer to its ask on a key (``Lw|<key>|<chunk>``; ``w|`` is
the window states' prefix in the same table)."""
GRANT_PREFIX = f"{RECEIPT_PREFIX}lease|"
"""The owner's grant records are receipts: evicted after the retention like the others."""
USES_PER_CHUNK = 64
MAX_CLOSED = 32
MAX_USES = 8192
"""Most uses of one lease (its return lists them all: it stays well under Kafka's message size)."""
_USE = struct.Struct("<qd")
_WAITING = struct.Struct("<16sB")
"""A waiting intent: its request id, and how many asks it waited for already."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- pure arithmetic ------------------------------------------------------------------------------------


def used_around(window: WindowState | None, counting: bool, start_ms: int, end_ms: int,
                window_ms: int) -> float:
    """The fullest window containing ``start_ms`` or ``end_ms``: its count, or its sum."""
    if window is None:
        return 0.0
    if counting:
        return float(max(window.peak_count(start_ms, window_ms), window.peak_count(end_ms, window_ms)))
    return max(window.peak_total(start_ms, window_ms, 0.0), window.peak_total(end_ms, window_ms, 0.0))


def slice_of(room: float, want: float, need: float, partitions: int, counting: bool) -> float:
    """How much to lend: what the holder wants, at most ``room / (2 * partitions)`` (a lease is counted
    twice, and every partition may hold one), whole actions for a count; 0 when that is below ``need``
    (the intent that asked could not use it)."""
    amount = min(want, room / (2 * max(1, partitions)))
    if counting:
        amount = float(math.floor(amount))
    return amount if amount >= need and amount > 0 else 0.0


def span_of(at_ms: int, window_ms: int) -> tuple[int, int]:
    """The event-time span of a lease asked by an intent at ``at_ms`` under a window of ``window_ms``.

    How long a span is costs nothing: a lease is returned a fixed time after it was received, whatever
    its span; a long one stays usable when asks and grants queue behind a backlog."""
    after = max(LEASE_MS, min(MAX_SPAN_MS, window_ms // 8))
    return at_ms - after // 4, at_ms + after


def worth_leasing(budget: float, window_ms: int, need: float, partitions: int) -> bool:
    """Whether a limit lends leases: its window spans several leases, and its budget spread over the
    window gives every partition a few actions per lease span. A smaller budget is spent in a burst,
    where the slow path decides the edge exactly; a lease would only hold part of it out of reach."""
    start, end = span_of(0, window_ms)
    share = budget * (LEASE_MS + LEAD_MS) / window_ms if window_ms > 0 else 0.0
    return window_ms >= MIN_WINDOW_FACTOR * (end - start) and share >= MIN_SHARE * max(1, partitions) * max(
        need, 1.0)


def add_lease(window: WindowState, counting: bool, start_ms: int, end_ms: int, amount: float,
              window_ms: int, keep: int | None) -> None:
    """Count a lease at both ends of its span."""
    for at_ms in (start_ms, end_ms):
        if counting:
            for _ in range(int(amount)):
                window.add(at_ms, None, window_ms, keep)
        else:
            window.add(at_ms, amount, window_ms, keep)


def settle_lease(window: WindowState, counting: bool, grant: GrantRecord,
                 uses: list[tuple[int, float]]) -> bool:
    """Replace a lease's two entries by its ``uses``. Uses outside the lease (more than lent, outside
    its span, a negative value) keep the lease entries too: stricter, never laxer. True when replaced."""
    spent = len(uses) if counting else math.fsum(value for _, value in uses)
    valid = spent <= grant.amount + 1e-9 and all(
        grant.start_ms <= at <= grant.end_ms and value >= 0 for at, value in uses)
    if valid:
        for at_ms in (grant.start_ms, grant.end_ms):
            if counting:
                for _ in range(int(grant.amount)):
                    window.remove(at_ms, None)
            else:
                window.remove(at_ms, grant.amount)
    for at_ms, value in uses:
        window.add(at_ms, None if counting else value, grant.window_ms, grant.keep)
    return valid


# -- the holder: a deciding partition -------------------------------------------------------------------


class Held(_Model):
    """One lease a deciding partition holds on a shared key."""

    lease_id: UUID
    policy_version: str
    start_ms: int
    end_ms: int
    amount: float
    held_ms: int
    """When the holder took it (its clock): it is returned :data:`CLOSE_AFTER_MS` later."""
    spent: float = 0.0
    uses: int = 0

    def covers(self, at_ms: int, need: float, policy_version: str) -> bool:
        return (self.policy_version == policy_version and self.start_ms <= at_ms <= self.end_ms
                and self.spent + need <= self.amount and self.uses < MAX_USES)


class Asked(_Model):
    """An ask not answered yet."""

    ask_id: UUID
    asked_ms: int
    refused: bool = False
    """Answered with nothing: kept until its timeout all the same, so nobody asks again meanwhile."""


class HeldKey(_Model):
    """A deciding partition's leases and open asks on one shared key (``L|<key>`` in its table)."""

    leases: tuple[Held, ...] = ()
    asks: tuple[Asked, ...] = ()
    last_spent: float = 0.0
    """What the last lease returned had spent (the next ask's size follows it)."""
    waiting: int = 0
    """How many intents wait for the answer to this key's ask (:meth:`HolderLeases.wait`)."""


def need_of(change: WindowChange) -> float | None:
    """What an action takes from a lease (None: no lease can cover it, e.g. a negative amount)."""
    if change.value is None:
        return 1.0
    return change.value if change.value >= 0 else None


def leasable(change: WindowChange, budget: float, partitions: int) -> bool:
    """Whether the limit of ``change`` (whose count or max is ``budget``) lends leases at all."""
    need = need_of(change)
    return need is not None and worth_leasing(budget, change.window_ms, need, partitions)


class HolderLeases:
    """The leases of one deciding partition's table (the one in use)."""

    def __init__(self, table: BytesTable) -> None:
        self.table = table

    def held(self, key: str) -> HeldKey:
        raw = self.table.get(HOLDER_PREFIX + key)
        return HeldKey() if raw is None else HeldKey.model_validate_json(raw)

    def put(self, key: str, held: HeldKey) -> None:
        if held.leases or held.asks or held.last_spent or held.waiting:
            self.table[HOLDER_PREFIX + key] = held.model_dump_json().encode()
        else:
            self.table.pop(HOLDER_PREFIX + key, None)

    def find(self, change: WindowChange, policy_version: str) -> tuple[HeldKey, int] | None:
        """The lease that covers ``change`` (its key, index), or None."""
        need = need_of(change)
        if need is None:
            return None
        held = self.held(change.key)
        for index, lease in enumerate(held.leases):
            if lease.covers(change.at_ms, need, policy_version):
                return held, index
        return None

    def spend(self, change: WindowChange, held: HeldKey, index: int) -> HeldKey:
        """Spend ``change`` on lease ``index`` of ``held``: the total, then the use itself. Returns the
        key's state after."""
        lease = held.leases[index]
        need = need_of(change) or 0.0
        spent = lease.model_copy(update={"spent": lease.spent + need, "uses": lease.uses + 1})
        held = held.model_copy(update={"leases": (*held.leases[:index], spent, *held.leases[index + 1:])})
        self.put(change.key, held)
        chunk = _uses_chunk(lease.lease_id, lease.uses // USES_PER_CHUNK)
        self.table[chunk] = self.table.get(chunk, b"") + _USE.pack(change.at_ms, change.value or 0.0)
        return held

    def ask_due(self, change: WindowChange, now_ms: int,
                held: HeldKey | None = None) -> tuple[float, HeldKey] | None:
        """(what to want, the key's state) when a new lease should be asked for ``change``'s key: no
        ask open or refused lately, and no lease that still lasts (half its span left after this
        action, half its amount unspent, half its time to the return); None otherwise. ``held``: the
        key's state, when known."""
        need = need_of(change)
        if need is None:
            return None
        held = held if held is not None else self.held(change.key)
        if any(now_ms - ask.asked_ms < ASK_TIMEOUT_MS for ask in held.asks):
            return None
        for lease in held.leases:
            half = (lease.end_ms - lease.start_ms) // 2
            lasting = (lease.end_ms - change.at_ms >= half and lease.start_ms <= change.at_ms
                       and now_ms - lease.held_ms < CLOSE_AFTER_MS // 2)
            if lasting and lease.amount - lease.spent >= max(need, lease.amount / 2):
                return None
        spent = max([held.last_spent, *(lease.spent for lease in held.leases)])
        rate = max([0.0, *(lease.spent / max(1, now_ms - lease.held_ms) for lease in held.leases)])
        return max(FIRST_WANT * max(need, 1.0), GROWTH * spent, rate * CLOSE_AFTER_MS), held

    @staticmethod
    def asking(held: HeldKey, now_ms: int, within_ms: int = ASK_TIMEOUT_MS) -> bool:
        """Whether an ask of ``held`` is open: not answered yet, nor asked ``within_ms`` ago or longer."""
        return any(not ask.refused and now_ms - ask.asked_ms < within_ms for ask in held.asks)

    def wait(self, key: str, request_id: UUID, asks: int, held: HeldKey | None = None) -> None:
        """Note an intent waiting for the answer to the ask open on ``key``, which is its ``asks``-th."""
        held = held if held is not None else self.held(key)
        chunk = _waiting_chunk(key, held.waiting // USES_PER_CHUNK)
        begun = self.table.get(chunk, b"") if held.waiting % USES_PER_CHUNK else b""  # a new chunk: anew
        self.table[chunk] = begun + _waiting_entry(request_id, asks)
        self.put(key, held.model_copy(update={"waiting": held.waiting + 1}))

    def waiting_on(self, key: str) -> list[tuple[UUID, int]]:
        """The intents waiting on ``key`` (request id, asks waited for), in their order. Read only: the
        caller settles each, then :meth:`relist` keeps those left, so a crash between two writes leaves
        every intent not yet settled still listed (the changelog keeps a prefix of a record's writes)."""
        found: list[tuple[UUID, int]] = []
        for chunk in range(_chunks(self.held(key).waiting)):
            raw = self.table.get(_waiting_chunk(key, chunk), b"")
            found += [(UUID(bytes=rid), asks) for rid, asks in _WAITING.iter_unpack(raw)]
        return found

    def relist(self, key: str, waiting: list[tuple[UUID, int]]) -> None:
        """Make ``waiting`` the intents waiting on ``key`` (the others were settled): the lists first, then
        the count. A crash in between leaves listed only intents still waiting or already settled (which
        the next settlement skips), never an intent waiting unlisted."""
        held = self.held(key)
        chunks = _chunks(len(waiting))
        for chunk in range(chunks):
            entries = waiting[chunk * USES_PER_CHUNK:(chunk + 1) * USES_PER_CHUNK]
            self.table[_waiting_chunk(key, chunk)] = b"".join(_waiting_entry(*entry) for entry in entries)
        for chunk in range(chunks, _chunks(held.waiting)):
            self.table.pop(_waiting_chunk(key, chunk), None)
        if held.waiting != len(waiting):
            self.put(key, held.model_copy(update={"waiting": len(waiting)}))

    def asked(self, key: str, held: HeldKey, ask_id: UUID, now_ms: int) -> None:
        asks = tuple(ask for ask in held.asks if now_ms - ask.asked_ms < ASK_TIMEOUT_MS)
        self.put(key, held.model_copy(update={"asks": (*asks, Asked(ask_id=ask_id, asked_ms=now_ms))}))

    def granted(self, key: str, ask_id: UUID, lease: Held | None) -> bool:
        """Take the answer to an open ask (``lease`` None: refused, and the ask stays until its timeout,
        so nobody asks again meanwhile). False when no such ask is open (a redelivered answer, one to an
        ask given up): the caller returns that lease unused, if it is not one already held."""
        held = self.held(key)
        if not any(ask.ask_id == ask_id and not ask.refused for ask in held.asks):
            return False
        if lease is None:
            asks = tuple(ask.model_copy(update={"refused": True}) if ask.ask_id == ask_id else ask
                         for ask in held.asks)
            self.put(key, held.model_copy(update={"asks": asks}))
            return True
        asks = tuple(ask for ask in held.asks if ask.ask_id != ask_id)
        leases = (*held.leases, lease)
        self.put(key, held.model_copy(update={"asks": asks, "leases": leases}))
        return True

    def knows(self, key: str, lease_id: UUID) -> bool:
        """Whether ``lease_id`` is held or was returned lately."""
        closed = self.table.get(CLOSED_PREFIX + key, b"")
        return lease_id.bytes in {closed[at:at + 16] for at in range(0, len(closed), 16)} or any(
            lease.lease_id == lease_id for lease in self.held(key).leases)

    @staticmethod
    def any_due(held: HeldKey, now_ms: int) -> bool:
        """Whether a lease of ``held`` is due for its return."""
        return any(now_ms >= lease.held_ms + CLOSE_AFTER_MS for lease in held.leases)

    def close_due(self, key: str, now_ms: int) -> list[tuple[Held, list[tuple[int, float]]]]:
        """Close the leases of ``key`` held for :data:`CLOSE_AFTER_MS`: (lease, its uses) to return; their
        state is gone once this is written (so nothing spends them again)."""
        held = self.held(key)
        due = [lease for lease in held.leases if now_ms >= lease.held_ms + CLOSE_AFTER_MS]
        asks = tuple(ask for ask in held.asks if now_ms - ask.asked_ms < ASK_TIMEOUT_MS)
        if not due and asks == held.asks:
            return []
        closed = []
        for lease in due:
            uses: list[tuple[int, float]] = []
            for chunk in range(_chunks(lease.uses)):
                raw = self.table.pop(_uses_chunk(lease.lease_id, chunk), b"")
                uses += [_USE.unpack_from(raw, at) for at in range(0, len(raw), _USE.size)]
            closed.append((lease, uses))
        left = tuple(lease for lease in held.leases if lease not in due)
        last = due[-1].spent if due else held.last_spent
        self.put(key, HeldKey(leases=left, asks=asks, last_spent=last, waiting=held.waiting))
        if due:
            gone = self.table.get(CLOSED_PREFIX + key, b"") + b"".join(lease.lease_id.bytes for lease in due)
            self.table[CLOSED_PREFIX + key] = gone[-16 * MAX_CLOSED:]
        return closed

    def shared_keys(self) -> list[str]:
        """The shared keys with leases, asks or waiting intents on this partition."""
        return [key[len(HOLDER_PREFIX):] for key in keys_with_prefix(self.table, HOLDER_PREFIX)]


def _chunks(count: int) -> int:
    """How many chunks of :data:`USES_PER_CHUNK` entries ``count`` entries fill."""
    return -(-count // USES_PER_CHUNK)


def _uses_chunk(lease_id: UUID, chunk: int) -> str:
    return f"{USES_PREFIX}{lease_id}|{chunk}"


def _waiting_chunk(key: str, chunk: int) -> str:
    return f"{WAITING_PREFIX}{key}|{chunk}"


def _waiting_entry(request_id: UUID, asks: int) -> bytes:
    return _WAITING.pack(request_id.bytes, min(asks, 255))


# -- the owner: the shared key's partition --------------------------------------------------------------


class GrantRecord(_Model):
    """What the owner lent (``d|lease|<lease id>``): answers a redelivered ask, settles the return."""

    key: str
    partition: int
    reply_key: str
    counting: bool
    start_ms: int
    end_ms: int
    amount: float
    window_ms: int
    keep: int | None
    settled: bool = False


def grant_key(lease_id: UUID) -> str:
    """Where the owner keeps its record of a lease."""
    return f"{GRANT_PREFIX}{lease_id}"


class OwnerLeases:
    """The leases a shared key's partition lent, in its table."""

    def __init__(self, table: BytesTable, state: TableState) -> None:
        self.table, self.state = table, state

    def record(self, lease_id: UUID) -> GrantRecord | None:
        raw = self.table.get(grant_key(lease_id))
        return None if raw is None else GrantRecord.model_validate_json(raw)

    def lend(self, lease_id: UUID, record: GrantRecord, want: float, need: float, partitions: int,
             limit: float) -> GrantRecord:
        """Lend what fits (maybe nothing) and record it: the window first, then the record, so a crash
        between them leaves the lease counted (stricter) rather than lent uncounted."""
        window = self.state.get_window(record.key)
        used = used_around(window, record.counting, record.start_ms, record.end_ms, record.window_ms)
        amount = slice_of(limit - used, want, need, partitions, record.counting)
        record = record.model_copy(update={"amount": amount, "settled": amount == 0})
        if amount:
            window = window or WindowState()
            add_lease(window, record.counting, record.start_ms, record.end_ms, amount, record.window_ms,
                      record.keep)
            self.state.put_window(record.key, window)
        self.table[grant_key(lease_id)] = record.model_dump_json().encode()
        return record

    def settle(self, lease_id: UUID, key: str, partition: int, uses: list[tuple[int, float]]) -> bool:
        """Replace a returned lease by its uses, once; the record is marked first, so a crash between
        the two leaves the lease counted whole (which covers the uses). False: not lent by this
        partition to that one, or already settled."""
        record = self.record(lease_id)
        if record is None or record.settled or record.partition != partition or record.key != key:
            return False
        settled = record.model_copy(update={"settled": True})
        self.table[grant_key(lease_id)] = settled.model_dump_json().encode()
        window = self.state.get_window(record.key) or WindowState()
        settle_lease(window, record.counting, record, uses)
        self.state.put_window(record.key, window)
        return True
