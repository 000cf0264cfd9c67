"""Engine state: sliding-window contents, per-(agent, tool) histories and sequence-rule trails, behind a
small interface.

The state kinds are compact (exact millisecond timestamps in ``array('q')``, summed values in
``array('d')``) and bounded per key (a count window by twice its count, a sum window by
:data:`MAX_EXACT` exact entries plus at most ``2 * BUCKETS_PER_WINDOW + 1`` buckets, a history by
:data:`MAX_TARGETS` and :data:`MAX_RECENT`, a sequence rule's trail by :data:`MAX_TRAIL`), and
serialise to bytes with ``to_bytes``/``from_bytes`` so a worker can keep them in a changelog-backed
table. Keys are plain strings (see :mod:`streams.engine.keys`).
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable
from itertools import chain
from typing import Protocol

_LITTLE = sys.byteorder == "little"
_WINDOW_HEAD = struct.Struct("<BBI")  # format version, has values, entry count
_BUCKETED_HEAD = struct.Struct("<BBIqI")  # the same, then bucket width (ms) and bucket count
_HISTORY_HEAD = struct.Struct("<BIIddqqHH")
_TRAIL_HEAD = struct.Struct("<BHH")  # format version, time count, hold count
_FORMAT = 1
_BUCKETED = 2
MAX_TARGETS = 64
"""Distinct targets remembered per (agent, tool); once full, no target counts as new."""
MAX_EXACT = 512
"""Newest entries a sum window keeps exactly; older ones are folded into buckets."""
BUCKETS_PER_WINDOW = 256
"""Buckets per window length once a sum window folds: a bucket spans ``ceil(window / 256)``."""
FEW_ENDS = 8
"""Up to this many windows to compare (an action before a few newer entries, such as a budget lease's
end entry), each is summed on its own; more take the prefix sums of :meth:`WindowState._peak_total_late`."""
MAX_TRAIL = 8
"""Most times a sequence-rule trail keeps (its pruning leaves at most 4; the cap is a safeguard)."""
MAX_HELD = 64
"""Most actions a trail holds while their final decision is not known (see :class:`TrailState`)."""
MAX_RECENT = 1024
"""Most recent timestamps kept per (agent, tool) for the burst factor."""


_UNIT = 1 << 1074
"""2**1074: every finite float times this is an integer (the smallest subnormal is 2**-1074)."""


def _scaled(value: float) -> int:
    """``value * 2**1074``, exactly."""
    numerator, denominator = value.as_integer_ratio()
    return numerator * (_UNIT // denominator)


def _pack(values: array[int] | array[float]) -> bytes:
    if _LITTLE:
        return values.tobytes()
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped.tobytes()


def _unpack(typecode: str, data: bytes) -> array[int] | array[float]:
    values: array[int] | array[float] = array(typecode)
    values.frombytes(data)
    if not _LITTLE:
        values.byteswap()
    return values


class WindowState:
    """The counted actions of one limit key: sorted event times (ms) and, for sums, their values.

    A ``count`` window keeps at most ``keep`` exact times. A ``sum`` window keeps its newest
    :data:`MAX_EXACT` entries exactly and folds older ones into buckets of ``bucket_ms`` (the window
    over :data:`BUCKETS_PER_WINDOW`, aligned on multiples of it): per bucket the number of entries and
    the sums of its positive and of its negative values (each as an unevaluated pair of floats, so
    nothing is lost in the additions). A window counts a bucket whole when the bucket lies inside it,
    and its positive part when the bucket straddles an edge of the window: never less than the exact
    sum of the entries inside, so a bucketed window may refuse earlier than an exact one (by at most
    one bucket's span) and never allows more.
    """

    __slots__ = ("bucket_ms", "counts", "starts", "sums", "times_ms", "values")

    def __init__(self, times_ms: array[int] | None = None, values: array[float] | None = None) -> None:
        self.times_ms: array[int] = times_ms if times_ms is not None else array("q")
        self.values: array[float] | None = values
        self.bucket_ms = 0
        self.starts: array[int] = array("q")
        """Bucket start times (ms, ascending); bucket ``i`` covers ``[starts[i], starts[i] + bucket_ms)``."""
        self.counts: array[int] = array("q")
        self.sums: array[float] = array("d")
        """Four per bucket: positive sum (high, low part), negative sum (high, low part)."""

    def is_empty(self) -> bool:
        """True when nothing is counted (no exact entry, no bucket)."""
        return not self.times_ms and not self.starts

    def _ends(self, at_ms: int, window_ms: int) -> list[int]:
        """Ends ``e`` of the windows ``(e - window, e]`` that contain ``at_ms`` and could be fullest.

        In order (``at_ms`` at or after the newest entry) that is ``at_ms`` alone; for a late action,
        also every entry time and bucket start in ``(at_ms, at_ms + window)``.
        """
        times, starts = self.times_ms, self.starts
        ends = [at_ms]
        if times and at_ms < times[-1]:
            ends += times[bisect_right(times, at_ms) : bisect_left(times, at_ms + window_ms)]
        if starts and at_ms < starts[-1]:
            ends += starts[bisect_right(starts, at_ms) : bisect_left(starts, at_ms + window_ms)]
        return ends

    def peak_count(self, at_ms: int, window_ms: int) -> int:
        """Most entries in any window of length ``window`` containing ``at_ms``.

        A window is ``(end - window, end]``: an entry exactly ``window`` older than its end is out.
        """
        times = self.times_ms
        ends = self._ends(at_ms, window_ms)
        return max(bisect_right(times, end) - bisect_right(times, end - window_ms) for end in ends)

    def peak_total(self, at_ms: int, window_ms: int, extra: float) -> float:
        """Largest ``extra`` + sum of the values in any window of length ``window`` containing ``at_ms``
        (with buckets: an upper bound of it, see the class).

        Sums are exact-rounded (``math.fsum``) and then rounded to 9 decimal places, so decimal money
        adds up exactly (0.1 + 0.2 is 0.3).
        """
        values = self.values
        if values is None:
            return extra
        ends = self._ends(at_ms, window_ms)
        if len(ends) > FEW_ENDS:
            return self._peak_total_late(ends, window_ms, extra)
        return max(self._total(end, window_ms, extra) for end in ends)

    def _total(self, end: int, window_ms: int, extra: float) -> float:
        """``extra`` + the sum of the window ``(end - window, end]``, as :meth:`peak_total` rounds it."""
        values, times = self.values, self.times_ms
        assert values is not None
        start, stop = bisect_right(times, end - window_ms), bisect_right(times, end)
        return round(math.fsum(chain(values[start:stop], self._bucket_parts(end, window_ms), (extra,))), 9)

    def _peak_total_late(self, ends: list[int], window_ms: int, extra: float) -> float:
        """:meth:`peak_total` over many window ends in time linear in the state: prefix sums of the
        values as exact integers (units of 2**-1074, so every float is one), each window's sum turned
        back into the correctly rounded float, which is what ``math.fsum`` gives."""
        assert self.values is not None
        times, starts, sums, width = self.times_ms, self.starts, self.sums, self.bucket_ms
        exact = [0]
        for value in self.values:
            exact.append(exact[-1] + _scaled(value))
        whole, positive = [0], []
        for index in range(len(starts)):
            plus = _scaled(sums[4 * index]) + _scaled(sums[4 * index + 1])
            positive.append(plus)
            whole.append(whole[-1] + plus + _scaled(sums[4 * index + 2]) + _scaled(sums[4 * index + 3]))
        added, peak = _scaled(extra), -math.inf
        for end in ends:
            low = end - window_ms
            total = exact[bisect_right(times, end)] - exact[bisect_right(times, low)] + added
            first, last = bisect_right(starts, low - width + 1), bisect_right(starts, end) - 1
            for index in {first, last} if first <= last else ():
                inside = starts[index] > low and starts[index] + width - 1 <= end
                total += whole[index + 1] - whole[index] if inside else positive[index]
            if last - first > 1:  # the buckets between the two edge ones lie inside the window
                total += whole[last] - whole[first + 1]
            peak = max(peak, round(total / _UNIT, 9))
        return peak

    def _bucket_parts(self, end: int, window_ms: int) -> list[float]:
        """What the buckets add to the window ``(end - window, end]``: a bucket inside it, its positive
        and negative sums; a bucket across one of its edges, its positive sum only."""
        starts, sums, width = self.starts, self.sums, self.bucket_ms
        if not starts:
            return []
        low = end - window_ms
        parts: list[float] = []
        for index in range(bisect_right(starts, low - width + 1), bisect_right(starts, end)):
            first = starts[index]
            base = 4 * index
            parts += sums[base : base + 2]
            if first > low and first + width - 1 <= end:
                parts += sums[base + 2 : base + 4]
        return parts

    def add(self, at_ms: int, value: float | None, window_ms: int, keep: int | None) -> None:
        """Record an action, then drop what no window can need any more.

        Entries are kept for two window lengths behind the newest (so an action up to one window late
        is still judged exactly, or conservatively once bucketed) and at most ``keep`` of them (twice a
        count limit); a sum window folds all but its newest :data:`MAX_EXACT` entries into buckets.
        """
        times = self.times_ms
        if value is not None and self.values is None:
            self.values = array("d", [0.0] * len(times))
        values = self.values
        if values is not None and self.starts and (not times or at_ms < times[0]):
            self._fold(at_ms, 0.0 if value is None else value)  # older than every exact entry
        elif not times or at_ms >= times[-1]:
            times.append(at_ms)
            if values is not None:
                values.append(0.0 if value is None else value)
        else:
            index = bisect_right(times, at_ms)
            insort(times, at_ms)
            if values is not None:
                values.insert(index, 0.0 if value is None else value)
        newest = times[-1] if times else self.starts[-1]
        drop = bisect_right(times, newest - 2 * window_ms)
        if keep is not None:
            drop = max(drop, len(times) - keep)
        if values is not None and len(times) - drop > MAX_EXACT:
            if not self.bucket_ms:
                self.bucket_ms = max(1, -(-window_ms // BUCKETS_PER_WINDOW))
            for index in range(drop, len(times) - MAX_EXACT):
                self._fold(times[index], values[index])
            drop = len(times) - MAX_EXACT
        if drop:
            del times[:drop]
            if values is not None:
                del values[:drop]
        if self.starts:
            self._drop_buckets(newest - 2 * window_ms)

    def _fold(self, at_ms: int, value: float) -> None:
        """Add one entry to its bucket (created when missing)."""
        width = self.bucket_ms
        first = at_ms - at_ms % width
        starts = self.starts
        index = bisect_left(starts, first)
        if index == len(starts) or starts[index] != first:
            starts.insert(index, first)
            self.counts.insert(index, 0)
            self.sums[4 * index : 4 * index] = array("d", bytes(32))
        self.counts[index] += 1
        self._add_to(index, value)

    def _add_to(self, index: int, value: float) -> None:
        """Add ``value`` (subtract, when negative and removing) to the right sum of bucket ``index``."""
        sums = self.sums
        base = 4 * index if value >= 0 else 4 * index + 2
        high, low = sums[base], sums[base + 1]
        total = math.fsum((high, low, value))
        sums[base], sums[base + 1] = total, math.fsum((high, low, value, -total))

    def _drop_buckets(self, until_ms: int) -> None:
        """Forget the buckets whose every entry is at or before ``until_ms``."""
        drop = bisect_right(self.starts, until_ms - self.bucket_ms + 1)
        if drop:
            del self.starts[:drop]
            del self.counts[:drop]
            del self.sums[: 4 * drop]

    def remove(self, at_ms: int, value: float | None) -> bool:
        """Undo one counted entry (time ``at_ms``, ``value``); False when no such entry is there."""
        times, values = self.times_ms, self.values
        index = bisect_left(times, at_ms)
        while index < len(times) and times[index] == at_ms:
            if values is None or value is None or values[index] == value:
                del times[index]
                if values is not None:
                    del values[index]
                return True
            index += 1
        if not self.starts or values is None:
            return False
        first = at_ms - at_ms % self.bucket_ms
        index = bisect_left(self.starts, first)
        if index == len(self.starts) or self.starts[index] != first:
            return False
        self.counts[index] -= 1
        if self.counts[index] == 0:
            del self.starts[index], self.counts[index]
            del self.sums[4 * index : 4 * index + 4]
        else:
            amount = 0.0 if value is None else value
            base = 4 * index if amount >= 0 else 4 * index + 2
            high, low = self.sums[base], self.sums[base + 1]
            total = math.fsum((high, low, -amount))
            self.sums[base], self.sums[base + 1] = total, math.fsum((high, low, -amount, -total))
        return True

    def to_bytes(self) -> bytes:
        """Compact serialisation. Without buckets, format 1 (as before buckets existed): a 6-byte
        header, then 8 bytes per time (and per value). With buckets, format 2: an 18-byte header
        (adding the bucket width and count), the times and values, then per bucket its start, count
        and four sums (48 bytes)."""
        tail = _pack(self.values) if self.values is not None else b""
        if not self.starts:
            head = _WINDOW_HEAD.pack(_FORMAT, self.values is not None, len(self.times_ms))
            return head + _pack(self.times_ms) + tail
        head = _BUCKETED_HEAD.pack(
            _BUCKETED, self.values is not None, len(self.times_ms), self.bucket_ms, len(self.starts),
        )
        return b"".join((head, _pack(self.times_ms), tail, _pack(self.starts), _pack(self.counts),
                         _pack(self.sums)))

    @classmethod
    def from_bytes(cls, data: bytes) -> WindowState:
        """Inverse of :meth:`to_bytes` (both formats)."""
        version, has_values, count = _WINDOW_HEAD.unpack_from(data)
        if version == _FORMAT:
            width, buckets, start = 0, 0, _WINDOW_HEAD.size
        elif version == _BUCKETED:
            _, _, _, width, buckets = _BUCKETED_HEAD.unpack_from(data)
            start = _BUCKETED_HEAD.size
        else:
            raise ValueError(f"unknown window state format {version}")
        times = _unpack("q", data[start : start + 8 * count])
        start += 8 * count
        values = None
        if has_values:
            values = _unpack("d", data[start : start + 8 * count])
            start += 8 * count
        state = cls(times, values)  # type: ignore[arg-type]
        if buckets:
            state.bucket_ms = width
            state.starts = _unpack("q", data[start : start + 8 * buckets])  # type: ignore[assignment]
            start += 8 * buckets
            state.counts = _unpack("q", data[start : start + 8 * buckets])  # type: ignore[assignment]
            start += 8 * buckets
            state.sums = _unpack("d", data[start : start + 32 * buckets])  # type: ignore[assignment]
        return state

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WindowState) and all(
            getattr(self, name) == getattr(other, name) for name in WindowState.__slots__
        )

    __hash__ = None  # type: ignore[assignment]


class HistoryState:
    """What one agent usually does with one tool: learnt from its allowed actions only.

    ``observations`` counts actions; ``amount_n``/``amount_mean``/``amount_m2`` are Welford's running
    mean and variance of the amount field; ``hours`` counts actions per UTC hour of day; ``targets``
    holds the sorted 64-bit hashes of the targets seen (at most :data:`MAX_TARGETS`); ``recent_ms`` the newest
    event times, pruned to the burst window.
    """

    __slots__ = (
        "amount_m2", "amount_mean", "amount_n", "first_ms", "hours", "last_ms", "observations",
        "recent_ms", "targets",
    )

    def __init__(self) -> None:
        self.observations = 0
        self.amount_n = 0
        self.amount_mean = 0.0
        self.amount_m2 = 0.0
        self.first_ms = 0
        self.last_ms = 0
        self.hours: array[int] = array("I", bytes(4 * 24))
        self.targets: array[int] = array("q")
        self.recent_ms: array[int] = array("q")

    def knows_target(self, target_hash: int) -> bool:
        """Whether this target was seen (``targets`` is kept sorted)."""
        targets = self.targets
        index = bisect_left(targets, target_hash)
        return index < len(targets) and targets[index] == target_hash

    @property
    def amount_std(self) -> float:
        """Sample standard deviation of the amounts seen (0 with fewer than two)."""
        if self.amount_n < 2:
            return 0.0
        return float((self.amount_m2 / (self.amount_n - 1)) ** 0.5)

    def observe(
        self, at_ms: int, amount: float | None, target_hash: int, burst_window_ms: int | None,
    ) -> None:
        """Learn from one allowed action."""
        if self.observations == 0 or at_ms < self.first_ms:
            self.first_ms = at_ms
        self.last_ms = max(self.last_ms, at_ms)
        self.observations += 1
        self.hours[(at_ms // 3_600_000) % 24] += 1
        if len(self.targets) < MAX_TARGETS and not self.knows_target(target_hash):
            insort(self.targets, target_hash)
        if amount is not None:
            count = self.amount_n + 1
            delta = amount - self.amount_mean
            mean = self.amount_mean + delta / count
            m2 = self.amount_m2 + delta * (amount - mean)
            if abs(mean) < float("inf") and abs(m2) < float("inf"):
                self.amount_n, self.amount_mean, self.amount_m2 = count, mean, m2
        if burst_window_ms is not None:
            recent = self.recent_ms
            if not recent or at_ms >= recent[-1]:
                recent.append(at_ms)
            else:
                insort(recent, at_ms)
            drop = max(bisect_right(recent, recent[-1] - burst_window_ms), len(recent) - MAX_RECENT)
            if drop > 0:
                del recent[:drop]

    def to_bytes(self) -> bytes:
        """Compact serialisation: a fixed header, 24 hour counts, target hashes, recent times."""
        head = _HISTORY_HEAD.pack(
            _FORMAT, self.observations, self.amount_n, self.amount_mean, self.amount_m2,
            self.first_ms, self.last_ms, len(self.targets), len(self.recent_ms),
        )
        return head + _pack(self.hours) + _pack(self.targets) + _pack(self.recent_ms)

    @classmethod
    def from_bytes(cls, data: bytes) -> HistoryState:
        """Inverse of :meth:`to_bytes`."""
        (version, observations, amount_n, mean, m2, first_ms, last_ms, n_targets,
         n_recent) = _HISTORY_HEAD.unpack_from(data)
        if version != _FORMAT:
            raise ValueError(f"unknown history state format {version}")
        state = cls()
        state.observations, state.amount_n, state.amount_mean, state.amount_m2 = (
            observations, amount_n, mean, m2,
        )
        state.first_ms, state.last_ms = first_ms, last_ms
        offset = _HISTORY_HEAD.size
        state.hours = _unpack("I", data[offset : offset + 96])  # type: ignore[assignment]
        offset += 96
        state.targets = _unpack("q", data[offset : offset + 8 * n_targets])  # type: ignore[assignment]
        offset += 8 * n_targets
        state.recent_ms = _unpack("q", data[offset : offset + 8 * n_recent])  # type: ignore[assignment]
        return state

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HistoryState) and all(
            getattr(self, name) == getattr(other, name) for name in HistoryState.__slots__
        )

    __hash__ = None  # type: ignore[assignment]


class TrailState:
    """The earlier actions of one sequence-rule key: their event times (ms), sorted, without the ones no
    window can need; and the ones *held* while their final decision is not known yet.

    A query asks whether some earlier action lies in ``(t - within, t]``. Of three kept times
    ``a < b < c`` with ``c - a <= within``, every such window holding ``b`` holds ``a`` or ``c``, so
    ``b`` is dropped; so are times two windows behind the newest. What is left is at most 4 times
    (:data:`MAX_TRAIL` is a safeguard) and answers every query up to one window late exactly.

    A worker holds an action it forwarded to the shared-limit hops while it is ALLOW so far (held times
    count in queries, so nothing slips through meanwhile) and drops the hold when the final decision
    comes back, recording the time then if that decision counts. At most :data:`MAX_HELD` holds: past
    that the oldest becomes a recorded time (stricter, never laxer).
    """

    __slots__ = ("held_ms", "held_tokens", "times_ms")

    def __init__(self, times_ms: array[int] | None = None) -> None:
        self.times_ms: array[int] = times_ms if times_ms is not None else array("q")
        self.held_ms: array[int] = array("q")
        self.held_tokens: array[int] = array("q")

    def latest(self, at_ms: int, within_ms: int) -> int | None:
        """The newest earlier action (recorded or held) in ``(at_ms - within, at_ms]``, or None."""
        times = self.times_ms
        index = bisect_right(times, at_ms)
        found = times[index - 1] if index and times[index - 1] > at_ms - within_ms else None
        for held in self.held_ms:
            if at_ms - within_ms < held <= at_ms and (found is None or held > found):
                found = held
        return found

    def add(self, at_ms: int, within_ms: int) -> None:
        """Record an earlier action (again: no change), then drop what no window needs."""
        times = self.times_ms
        index = bisect_left(times, at_ms)
        if index < len(times) and times[index] == at_ms:
            return
        times.insert(index, at_ms)
        del times[: bisect_right(times, times[-1] - 2 * within_ms)]
        index = 1
        while index < len(times) - 1:
            if times[index + 1] - times[index - 1] <= within_ms:
                del times[index]
            else:
                index += 1
        del times[:-MAX_TRAIL]

    def hold(self, at_ms: int, token: int, within_ms: int) -> None:
        """Hold an action whose final decision is not known yet (once per token)."""
        if token in self.held_tokens:
            return
        self.held_ms.append(at_ms)
        self.held_tokens.append(token)
        if len(self.held_ms) > MAX_HELD:
            self.add(self.held_ms.pop(0), within_ms)
            self.held_tokens.pop(0)

    def release(self, token: int) -> None:
        """Drop the hold of ``token`` (none: no change)."""
        if token in self.held_tokens:
            index = self.held_tokens.index(token)
            del self.held_ms[index], self.held_tokens[index]

    def to_bytes(self) -> bytes:
        """A 5-byte header (format, time count, hold count), 8 bytes per time, 16 per hold."""
        head = _TRAIL_HEAD.pack(_FORMAT, len(self.times_ms), len(self.held_ms))
        return head + _pack(self.times_ms) + _pack(self.held_ms) + _pack(self.held_tokens)

    @classmethod
    def from_bytes(cls, data: bytes) -> TrailState:
        """Inverse of :meth:`to_bytes`."""
        version, count, held = _TRAIL_HEAD.unpack_from(data)
        if version != _FORMAT:
            raise ValueError(f"unknown trail state format {version}")
        start = _TRAIL_HEAD.size
        state = cls(_unpack("q", data[start : start + 8 * count]))  # type: ignore[arg-type]
        start += 8 * count
        state.held_ms = _unpack("q", data[start : start + 8 * held])  # type: ignore[assignment]
        state.held_tokens = _unpack("q", data[start + 8 * held : start + 16 * held])  # type: ignore[assignment]
        return state

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrailState) and all(
            getattr(self, name) == getattr(other, name) for name in TrailState.__slots__
        )

    __hash__ = None  # type: ignore[assignment]


class StateStore(Protocol):
    """Where the engine reads window and history state; the caller writes through :func:`apply`.

    ``get_*`` must not create entries. Implementations: :class:`InMemoryState` here, a faust
    table (values as ``to_bytes``) in the worker.
    """

    def get_window(self, key: str) -> WindowState | None:
        """The window state at ``key``, or None when nothing was counted yet."""
        ...

    def put_window(self, key: str, state: WindowState) -> None:
        """Store the window state at ``key``."""
        ...

    def get_history(self, key: str) -> HistoryState | None:
        """The (agent, tool) history at ``key``, or None for a new pair."""
        ...

    def put_history(self, key: str, state: HistoryState) -> None:
        """Store the history at ``key``."""
        ...

    def get_trail(self, key: str) -> TrailState | None:
        """The sequence-rule trail at ``key``, or None when no earlier action was recorded."""
        ...

    def put_trail(self, key: str, state: TrailState) -> None:
        """Store the trail at ``key``."""
        ...


class InMemoryState:
    """Plain dictionaries: for replays, ``sluicegate evaluate``, tests and the benchmark.

    ``get_window``/``get_history`` are the dictionaries' own ``get`` (no Python frame per read).
    """

    __slots__ = ("get_history", "get_trail", "get_window", "histories", "trails", "windows")

    def __init__(self) -> None:
        self.windows: dict[str, WindowState] = {}
        self.histories: dict[str, HistoryState] = {}
        self.trails: dict[str, TrailState] = {}
        self.get_window: Callable[[str], WindowState | None] = self.windows.get
        self.get_history: Callable[[str], HistoryState | None] = self.histories.get
        self.get_trail: Callable[[str], TrailState | None] = self.trails.get

    def put_window(self, key: str, state: WindowState) -> None:
        """Store the window state at ``key``."""
        self.windows[key] = state

    def put_history(self, key: str, state: HistoryState) -> None:
        """Store the history at ``key``."""
        self.histories[key] = state

    def put_trail(self, key: str, state: TrailState) -> None:
        """Store the trail at ``key``."""
        self.trails[key] = state
