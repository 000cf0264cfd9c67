"""The chaos run's processes and the faults injected into them.

:class:`Managed` is a child process the run supervises: an exit the run did not cause is a crash, and
the process is started again. :class:`FaultPlan` draws the faults from a seed: two lanes run side by
side (worker and broker faults one at a time; sink, store and bad-input faults one at a time), each
lane's first round covers all its kinds in a seeded order, then kinds are drawn at random, at random
gaps, until the run's end minus a tail. The first round runs whatever the time: a short run still
injects every kind at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.chaos_reconcile import Windows

log = logging.getLogger("chaos")
ROOT = Path(__file__).resolve().parents[1]
STOP_GRACE_S = 30.0
SESSION_TIMEOUT_S = 6.0
"""The workers' group session timeout (:data:`streams.runtime.kafka.SESSION_TIMEOUT_MS`)."""
STOPPED_S = SESSION_TIMEOUT_S + 4.0
"""How long a SIGSTOPped worker stays stopped: past the session timeout, its partitions move on."""
KILL_PAUSE_S = 2.0
STORE_OUTAGE_S = 6.0
SETTLE_S = 10.0
"""After a fault ends, how long its effects (a rebalance, a restore, a reconnect) count as "during"."""
WORKER_KINDS = ("worker_kill", "worker_stop", "worker_restart", "broker_restart")
SIDE_KINDS = ("sink_kill", "store_outage", "bad_input")
GAP_S = (2.0, 8.0)


@dataclass
class Managed:
    """A supervised child process (``python argv...``), logging to ``log``."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    expected_exit: bool = False

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, *self.argv], cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT, env={**os.environ, **self.env},
                                         start_new_session=True)
        self.expected_exit = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop on purpose (SIGTERM waits for a clean exit, then kills)."""
        self.expected_exit = True
        if not self.running:
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(sig)
        try:
            self.proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def rss_mb(self) -> float:
        """Resident memory, from /proc (0 when not running)."""
        if not self.running:
            return 0.0
        assert self.proc is not None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0


Injector = Callable[[random.Random], Awaitable[None]]


@dataclass
class FaultPlan:
    """Runs the faults of one seed until ``deadline`` (monotonic)."""

    seed: int
    deadline: float
    injectors: dict[str, Injector]
    fired: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    """Faults that could not be injected (the injector raised): not counted as fired."""
    windows: Windows = field(default_factory=Windows)

    async def run(self) -> None:
        rng = random.Random(self.seed)
        lanes = [self._lane(kinds, random.Random(rng.getrandbits(64)))
                 for kinds in (WORKER_KINDS, SIDE_KINDS)]
        await asyncio.gather(*lanes)

    async def _lane(self, kinds: tuple[str, ...], rng: random.Random) -> None:
        first = list(kinds)
        rng.shuffle(first)
        while True:
            await asyncio.sleep(rng.uniform(*GAP_S))
            if not first and time.monotonic() >= self.deadline:
                return
            first_round = bool(first)
            kind = first.pop(0) if first_round else rng.choice(kinds)
            started = time.monotonic()
            log.warning("fault %s begins", kind)
            try:
                await self.injectors[kind](rng)
            except Exception:
                log.exception("fault %s could not be injected", kind)
                self.failed[kind] += 1
                if first_round:
                    first.append(kind)  # the first round still covers it
                continue
            finally:
                self.windows.add(started, time.monotonic() + SETTLE_S)
            log.warning("fault %s ends after %.1f s", kind, time.monotonic() - started)
            self.fired[kind] += 1
