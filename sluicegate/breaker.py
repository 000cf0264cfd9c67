"""Exponential backoff with jitter, and the circuit breaker that fails fast while the processor is down.

The breaker is pure: time comes from an injected clock and randomness from an injected ``Random``, so
its state machine is tested without sleeping.

CLOSED --(N consecutive failures)--> OPEN --(cool-down elapsed)--> HALF_OPEN --(probe succeeds)--> CLOSED
                                       ^------------------(probe fails)-------------'
Each re-open without a success in between lengthens the cool-down along the backoff schedule.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_HALF_OPEN_PROBES = 1
_MAX_EXPONENT = 64


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry ``attempt`` (0-based): ``initial_s * multiplier**attempt``, capped, with jitter.

    ``jitter`` is the fraction of the delay that is randomised downwards: 0 gives the exact schedule,
    0.5 gives a delay uniformly in ``[ceiling/2, ceiling]``, so a fleet of clients does not retry in step.
    """

    initial_s: float = 0.1
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.max_s) or self.multiplier < 1 or not 0 <= self.jitter <= 1:
            raise ValueError(f"invalid backoff {self}")

    def ceiling(self, attempt: int) -> float:
        """The delay before jitter."""
        return min(self.max_s, self.initial_s * self.multiplier ** min(max(attempt, 0), _MAX_EXPONENT))

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The jittered delay before retry ``attempt``."""
        return self.ceiling(attempt) * (1.0 - self.jitter * rng.random())


class BreakerState(StrEnum):
    """Where the breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to make one call; hand it back with ``success``, ``failure`` or ``release``."""

    probe: bool
    epoch: int


@dataclass
class CircuitBreaker:
    """Counts consecutive failures (timeouts, connection errors); fails fast once they reach a threshold."""

    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    cooldown: Backoff = field(default_factory=lambda: Backoff(initial_s=1.0, max_s=30.0))
    half_open_probes: int = DEFAULT_HALF_OPEN_PROBES
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    _state: BreakerState = field(default=BreakerState.CLOSED, init=False)
    _failures: int = field(default=0, init=False)
    _reopens: int = field(default=0, init=False)
    _retry_at: float = field(default=0.0, init=False)
    _probes_in_flight: int = field(default=0, init=False)
    _epoch: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.half_open_probes < 1:
            raise ValueError("failure_threshold and half_open_probes must be at least 1")

    @property
    def state(self) -> BreakerState:
        """The current state; an OPEN breaker whose cool-down is over reads as HALF_OPEN."""
        if self._state is BreakerState.OPEN and self.clock() >= self._retry_at:
            self._state = BreakerState.HALF_OPEN
        return self._state

    @property
    def retry_in_s(self) -> float:
        """Seconds until the next probe is allowed (0 unless OPEN)."""
        return max(0.0, self._retry_at - self.clock()) if self.state is BreakerState.OPEN else 0.0

    def acquire(self) -> Permit | None:
        """A permit to call the processor, or None to fail fast."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Permit(probe=False, epoch=self._epoch)
        if state is BreakerState.HALF_OPEN and self._probes_in_flight < self.half_open_probes:
            self._probes_in_flight += 1
            return Permit(probe=True, epoch=self._epoch)
        return None

    def success(self, permit: Permit) -> None:
        """A usable decision arrived: the processor is up."""
        self._end_probe(permit)
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._reopens = 0
        self._epoch += 1

    def failure(self, permit: Permit) -> None:
        """The call timed out or could not reach the broker."""
        self._end_probe(permit)
        if permit.epoch != self._epoch:
            return  # started before the last transition; already accounted for
        if permit.probe or self._state is BreakerState.HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold:
            self._open()

    def release(self, permit: Permit) -> None:
        """The call ended without telling anything about the processor (e.g. it was cancelled)."""
        self._end_probe(permit)

    def _end_probe(self, permit: Permit) -> None:
        if permit.probe and permit.epoch == self._epoch and self._probes_in_flight > 0:
            self._probes_in_flight -= 1

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._retry_at = self.clock() + self.cooldown.delay(self._reopens, self.rng)
        self._reopens += 1
        self._failures = 0
        self._probes_in_flight = 0
        self._epoch += 1
