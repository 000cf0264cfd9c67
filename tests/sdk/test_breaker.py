"""The circuit breaker's state machine (injected clock and randomness) and the backoff schedule."""

from __future__ import annotations

import random

import pytest

from sluicegate.breaker import Backoff, BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: FakeClock, threshold: int = 3) -> CircuitBreaker:
    cooldown = Backoff(initial_s=1.0, max_s=8.0, jitter=0.0)
    return CircuitBreaker(failure_threshold=threshold, cooldown=cooldown, clock=clock, rng=random.Random(7))


def state(b: CircuitBreaker) -> BreakerState:
    """Read the state afresh (keeps mypy from narrowing a property across calls)."""
    return b.state


def fail_times(b: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        permit = b.acquire()
        assert permit is not None
        b.failure(permit)


def test_opens_after_threshold_consecutive_failures_and_fails_fast() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail_times(b, 2)
    assert state(b) is BreakerState.CLOSED
    fail_times(b, 1)
    assert state(b) is BreakerState.OPEN
    assert b.acquire() is None
    assert b.retry_in_s == pytest.approx(1.0)


def test_a_success_resets_the_consecutive_count() -> None:
    b = breaker(FakeClock())
    fail_times(b, 2)
    permit = b.acquire()
    assert permit is not None
    b.success(permit)
    fail_times(b, 2)
    assert state(b) is BreakerState.CLOSED


def test_half_open_allows_one_probe_and_closes_on_success() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail_times(b, 3)
    clock.now += 0.999
    assert b.acquire() is None
    clock.now += 0.001
    assert state(b) is BreakerState.HALF_OPEN
    probe = b.acquire()
    assert probe is not None and probe.probe
    assert b.acquire() is None  # only one probe at a time
    b.success(probe)
    assert state(b) is BreakerState.CLOSED
    assert b.acquire() is not None


def test_failed_probe_reopens_with_a_longer_cooldown_capped() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail_times(b, 3)
    cooldowns = []
    for _ in range(5):
        cooldowns.append(b.retry_in_s)
        clock.now += b.retry_in_s
        probe = b.acquire()
        assert probe is not None
        b.failure(probe)
        assert state(b) is BreakerState.OPEN
    assert cooldowns == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_released_probe_frees_the_slot() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail_times(b, 3)
    clock.now += 1.0
    probe = b.acquire()
    assert probe is not None
    b.release(probe)
    assert state(b) is BreakerState.HALF_OPEN
    assert b.acquire() is not None


def test_failures_of_calls_started_before_opening_do_not_extend_it() -> None:
    clock = FakeClock()
    b = breaker(clock)
    early = [b.acquire() for _ in range(5)]
    for permit in early[:3]:
        assert permit is not None
        b.failure(permit)
    retry = b.retry_in_s
    for permit in early[3:]:
        assert permit is not None
        b.failure(permit)
    assert state(b) is BreakerState.OPEN
    assert b.retry_in_s == retry


def test_success_after_reopen_resets_the_cooldown_schedule() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail_times(b, 3)
    clock.now += b.retry_in_s
    probe = b.acquire()
    assert probe is not None
    b.failure(probe)  # cooldown now 2 s
    clock.now += b.retry_in_s
    probe = b.acquire()
    assert probe is not None
    b.success(probe)
    fail_times(b, 3)
    assert b.retry_in_s == pytest.approx(1.0)


def test_invalid_breaker_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)


def test_backoff_schedule_without_jitter_is_exponential_and_capped() -> None:
    backoff = Backoff(initial_s=0.1, max_s=1.0, multiplier=2.0, jitter=0.0)
    rng = random.Random(1)
    assert [backoff.delay(n, rng) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff.delay(10_000, rng) == 1.0


def test_backoff_jitter_stays_within_bounds_and_varies() -> None:
    backoff = Backoff(initial_s=0.1, max_s=10.0, jitter=0.5)
    rng = random.Random(3)
    delays = [backoff.delay(3, rng) for _ in range(200)]
    assert all(0.4 <= d <= 0.8 for d in delays)
    assert len(set(delays)) > 100


@pytest.mark.parametrize(
    "kwargs", [{"initial_s": 0.0}, {"initial_s": 2.0, "max_s": 1.0}, {"multiplier": 0.5}, {"jitter": 1.5}]
)
def test_invalid_backoff_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)
