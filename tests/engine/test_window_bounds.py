"""Bounded window state: a sum window folds its older entries into buckets, stays under a fixed size
however many actions it holds, and never allows more than the exact window would."""

from __future__ import annotations

import math
import random
import struct
from array import array
from bisect import bisect_right
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from schemas import DecisionKind, Intent
from streams.engine import InMemoryState, WindowChange, WindowState, decide
from streams.engine import state as engine_state
from streams.engine.compiler import LimitScope
from streams.engine.state import BUCKETS_PER_WINDOW, MAX_EXACT
from streams.state.table_state import MAX_TOKENS, TableState
from tests.engine.helpers import intent, policy

ALLOW, BLOCK = DecisionKind.ALLOW, DecisionKind.BLOCK
HOUR = 3_600_000
WIDTH = -(-HOUR // BUCKETS_PER_WINDOW)  # the bucket width of a 1h window
BOUND = 18 + 16 * MAX_EXACT + 48 * (2 * BUCKETS_PER_WINDOW + 1)
"""Largest encoding of a sum window: header, exact times and values, two windows of buckets and one."""
SPEND = """default: ALLOW
limits:
  - id: spend
    match: {tool: payments.refund}
    window: 1h
    sum: params.amount
    max: 1000000.5
"""


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _million(start_ms: int) -> WindowState:
    """1,000,000 refunds of 1.0 by one agent, one every 3 ms from ``start_ms``: all inside one hour."""
    window = WindowState()
    for index in range(1_000_000):
        window.add(start_ms + 3 * index, 1.0, HOUR, None)
    return window


def refund(amount: float, at_ms: int) -> Intent:
    """A refund of ``amount`` by agent-1 at ``at_ms``."""
    return intent(at=_at(at_ms), params={"amount": amount})


def _copy(window: WindowState) -> InMemoryState:
    state = InMemoryState()
    state.put_window("spend|agent=agent-1", WindowState.from_bytes(window.to_bytes()))
    return state


def test_a_million_actions_stay_under_a_fixed_size_and_the_limit_stays_exact() -> None:
    start = int(datetime(2025, 3, 3, 10, tzinfo=UTC).timestamp() * 1000)
    start -= start % WIDTH  # the first refund opens a bucket
    window = _million(start)
    encoded = window.to_bytes()
    assert len(encoded) <= BOUND < 64 * 1024
    assert len(window.times_ms) == MAX_EXACT and sum(window.counts) == 1_000_000 - MAX_EXACT
    assert WindowState.from_bytes(encoded) == window
    table: dict[str, bytes] = {}
    TableState(table).put_window("spend|agent=agent-1", window)  # a changelog value, tokens included
    assert len(table["w|spend|agent=agent-1"]) <= 4 + 8 * MAX_TOKENS + BOUND

    compiled, last = policy(SPEND), start + 3 * 999_999
    state = _copy(window)
    assert decide(compiled, state, refund(0.5, last + 1)).decision is ALLOW  # reaches max exactly
    assert decide(compiled, state, refund(0.000000001, last + 2)).decision is BLOCK
    assert decide(compiled, _copy(window), refund(0.500000001, last + 1)).decision is BLOCK

    # the first bucket holds the refunds at start, start + 3, ... up to start + WIDTH - 1: the window
    # ending at start + WIDTH - 1 + 1h no longer holds any of them, exactly as an exact window
    first = -(-WIDTH // 3)
    room = first + 0.5
    edge = start + WIDTH - 1 + HOUR
    assert decide(compiled, _copy(window), refund(room, edge)).decision is ALLOW
    assert decide(compiled, _copy(window), refund(room + 0.000000001, edge)).decision is BLOCK
    # one ms earlier the bucket straddles the window's edge: counted whole, never less
    assert decide(compiled, _copy(window), refund(room, edge - 1)).decision is BLOCK


def _exact_peak(entries: list[tuple[int, float]], at_ms: int, window_ms: int, extra: float) -> float:
    """The exact definition: the fullest window of length ``window_ms`` holding ``at_ms``."""
    ends = [at_ms] + [t for t, _ in entries if at_ms < t < at_ms + window_ms]
    return max(round(sum(v for t, v in entries if end - window_ms < t <= end) + extra, 9) for end in ends)


@pytest.mark.parametrize("seed", range(20))
def test_a_bucketed_window_never_sums_less_than_the_exact_one(
    seed: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_state, "MAX_EXACT", 8)
    rng = random.Random(seed)
    window_ms = 10_000
    window, entries, now = WindowState(), [], 0
    for _ in range(300):
        now += rng.randrange(0, 300)
        at = now - (rng.randrange(0, window_ms) if rng.random() < 0.2 else 0)  # some late ones
        value = round(rng.uniform(-5, 20), 2)
        window.add(at, value, window_ms, None)
        entries.append((at, value))
        newest = max(t for t, _ in entries)
        kept = [(t, v) for t, v in entries if t > newest - 2 * window_ms]
        probe = newest - rng.randrange(0, window_ms)
        assert window.peak_total(probe, window_ms, 1.0) >= _exact_peak(kept, probe, window_ms, 1.0) - 1e-9
        assert len(window.times_ms) <= 8 and len(window.starts) <= 2 * BUCKETS_PER_WINDOW + 1
    assert window.starts, "the test must exercise buckets"


def test_a_released_entry_leaves_its_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_state, "MAX_EXACT", 2)
    table: dict[str, bytes] = {}
    state = TableState(table)
    state.put_window("k", WindowState())
    window = WindowState()
    for at, value in ((0, 3.0), (1, -1.0), (2, 5.0), (3, 7.0)):
        window.add(at, value, HOUR, None)
    state.put_window("k", window)
    assert list(window.counts) == [2]  # 0 and 1 were folded (bucket [0, WIDTH))
    assert state.release("k", 1, -1.0)
    assert state.get_window("k").peak_total(3, HOUR, 0.0) == 15.0  # type: ignore[union-attr]
    assert state.release("k", 0, 3.0)
    assert not state.get_window("k").starts  # type: ignore[union-attr]
    assert not state.release("k", 0, 3.0)


def test_existing_changelog_values_are_read_and_small_windows_keep_their_format() -> None:
    times, values = array("q", [1_000, 2_000]), array("d", [1.5, 2.5])
    old = struct.pack("<BBI", 1, 1, 2) + times.tobytes() + values.tobytes()  # format 1, as stored before
    window = WindowState.from_bytes(old)
    assert list(window.times_ms) == [1_000, 2_000] and list(window.values or []) == [1.5, 2.5]
    assert window.to_bytes() == old


@pytest.mark.parametrize("seed", range(10))
def test_a_late_action_is_summed_as_fsum_sums_each_window(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The late path (prefix sums of exact integers) gives what fsum gives window by window."""
    monkeypatch.setattr(engine_state, "MAX_EXACT", 16)
    rng = random.Random(seed)
    window_ms, window = 10_000, WindowState()
    for index in range(200):
        window.add(index * 37 + rng.randrange(0, 30), rng.choice([0.1, 0.2, 0.3, 1e-9, -0.7, 12.34, 1e15]),
                   window_ms, None)
    times, values = window.times_ms, window.values or array("d")
    for _ in range(30):
        probe = times[-1] - rng.randrange(1, window_ms)
        ends = window._ends(probe, window_ms)
        assert len(ends) > 1
        expected = max(
            round(math.fsum([
                *values[bisect_right(times, end - window_ms) : bisect_right(times, end)],
                *window._bucket_parts(end, window_ms), 0.05,
            ]), 9)
            for end in ends
        )
        assert window.peak_total(probe, window_ms, 0.05) == expected


@pytest.mark.parametrize("seed", range(10))
def test_an_action_before_a_few_newer_entries_sums_each_window_like_the_late_path(seed: int) -> None:
    """A lease's end entry lies in the future: every check is then 'late' by a few entries. Summing those
    few windows one by one gives exactly what the prefix sums give."""
    rng = random.Random(seed)
    window_ms, window = 10_000, WindowState()
    for index in range(600):  # past MAX_EXACT: buckets too
        window.add(index * 37, rng.choice([0.1, 0.2, 0.3, 1e-9, -0.7, 12.34, 1e15]), window_ms, None)
    newest = window.times_ms[-1]
    for ahead in range(1, engine_state.FEW_ENDS):
        window.add(newest + 5_000 + ahead, rng.choice([0.1, 7.5]), window_ms, None)  # future entries
        probe = newest + rng.randrange(0, 1_000)
        ends = window._ends(probe, window_ms)
        assert 1 < len(ends) <= engine_state.FEW_ENDS
        assert window.peak_total(probe, window_ms, 0.05) == window._peak_total_late(ends, window_ms, 0.05)


def test_a_request_releases_its_entry_once() -> None:
    """A settlement replayed after a crash (its release written, its receipt not) must not undo another
    request's entry of the same time and value."""
    state = TableState({})
    first, second = uuid4(), uuid4()
    for request in (first, second):
        assert state.add_once(WindowChange("l", LimitScope.AGENT, "k", 5, 2.0, HOUR, None), request)
    assert state.release("k", 5, 2.0, first)
    assert not state.release("k", 5, 2.0, first)
    assert state.get_window("k").peak_total(5, HOUR, 0.0) == 2.0  # type: ignore[union-attr]
