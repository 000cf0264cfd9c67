"""Engine state: sliding-window contents and per-(agent, tool) histories, behind a small interface.

Both state kinds are compact (exact millisecond timestamps in ``array('q')``, summed values in
``array('d')``) and serialise to bytes with ``to_bytes``/``from_bytes`` so a worker can keep them in a
changelog-backed table. Keys are plain strings (see :mod:`streams.engine.keys`).
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
_HISTORY_HEAD = struct.Struct("<BIIddqqHH")
_FORMAT = 1
MAX_TARGETS = 64
"""Distinct targets remembered per (agent, tool); once full, no target counts as new."""
MAX_RECENT = 1024
"""Most recent timestamps kept per (agent, tool) for the burst factor."""


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
    """The counted actions of one limit key: sorted event times (ms) and, for sums, their values."""

    __slots__ = ("times_ms", "values")

    def __init__(self, times_ms: array[int] | None = None, values: array[float] | None = None) -> None:
        self.times_ms: array[int] = times_ms if times_ms is not None else array("q")
        self.values: array[float] | None = values

    def _ends(self, at_ms: int, window_ms: int) -> list[int]:
        """Ends ``e`` of the windows ``(e - window, e]`` that contain ``at_ms`` and could be fullest.

        In order (``at_ms`` at or after the newest entry) that is ``at_ms`` alone; for a late action,
        also every entry time in ``(at_ms, at_ms + window)``.
        """
        times = self.times_ms
        if not times or at_ms >= times[-1]:
            return [at_ms]
        return [at_ms, *times[bisect_right(times, at_ms) : bisect_left(times, at_ms + window_ms)]]

    def peak_count(self, at_ms: int, window_ms: int) -> int:
        """Most entries in any window of length ``window`` containing ``at_ms``.

        A window is ``(end - window, end]``: an entry exactly ``window`` older than its end is out.
        """
        times = self.times_ms
        ends = self._ends(at_ms, window_ms)
        return max(bisect_right(times, end) - bisect_right(times, end - window_ms) for end in ends)

    def peak_total(self, at_ms: int, window_ms: int, extra: float) -> float:
        """Largest ``extra`` + sum of the values in any window of length ``window`` containing ``at_ms``.

        Sums are exact-rounded (``math.fsum``) and then rounded to 9 decimal places, so decimal money
        adds up exactly (0.1 + 0.2 is 0.3).
        """
        values = self.values
        if values is None:
            return extra
        times = self.times_ms
        peak = -math.inf
        for end in self._ends(at_ms, window_ms):
            start, stop = bisect_right(times, end - window_ms), bisect_right(times, end)
            peak = max(peak, round(math.fsum(chain(values[start:stop], (extra,))), 9))
        return peak

    def add(self, at_ms: int, value: float | None, window_ms: int, keep: int | None) -> None:
        """Record an action, then drop what no window can need any more.

        Entries are kept for two window lengths behind the newest (so an action up to one window late
        is still judged exactly) and at most ``keep`` of them (twice a count limit).
        """
        times = self.times_ms
        if value is not None and self.values is None:
            self.values = array("d", [0.0] * len(times))
        if not times or at_ms >= times[-1]:
            times.append(at_ms)
            if self.values is not None:
                self.values.append(0.0 if value is None else value)
        else:
            index = bisect_right(times, at_ms)
            insort(times, at_ms)
            if self.values is not None:
                self.values.insert(index, 0.0 if value is None else value)
        newest = times[-1]
        drop = bisect_right(times, newest - 2 * window_ms)
        if keep is not None:
            drop = max(drop, len(times) - keep)
        if drop:
            del times[:drop]
            if self.values is not None:
                del self.values[:drop]

    def to_bytes(self) -> bytes:
        """Compact serialisation: a 6-byte header, then 8 bytes per time (and per value)."""
        head = _WINDOW_HEAD.pack(_FORMAT, self.values is not None, len(self.times_ms))
        tail = _pack(self.values) if self.values is not None else b""
        return head + _pack(self.times_ms) + tail

    @classmethod
    def from_bytes(cls, data: bytes) -> WindowState:
        """Inverse of :meth:`to_bytes`."""
        version, has_values, count = _WINDOW_HEAD.unpack_from(data)
        if version != _FORMAT:
            raise ValueError(f"unknown window state format {version}")
        start = _WINDOW_HEAD.size
        times = _unpack("q", data[start : start + 8 * count])
        values = _unpack("d", data[start + 8 * count : start + 16 * count]) if has_values else None
        return cls(times, values)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WindowState) and (self.times_ms, self.values) == (
            other.times_ms, other.values,
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


class InMemoryState:
    """Plain dictionaries: for replays, ``sluicegate evaluate``, tests and the benchmark.

    ``get_window``/``get_history`` are the dictionaries' own ``get`` (no Python frame per read).
    """

    __slots__ = ("get_history", "get_window", "histories", "windows")

    def __init__(self) -> None:
        self.windows: dict[str, WindowState] = {}
        self.histories: dict[str, HistoryState] = {}
        self.get_window: Callable[[str], WindowState | None] = self.windows.get
        self.get_history: Callable[[str], HistoryState | None] = self.histories.get

    def put_window(self, key: str, state: WindowState) -> None:
        """Store the window state at ``key``."""
        self.windows[key] = state

    def put_history(self, key: str, state: HistoryState) -> None:
        """Store the history at ``key``."""
        self.histories[key] = state
