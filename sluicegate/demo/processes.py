"""The demo's child processes: the worker and the audit sink, each logging to its own file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

STOP_GRACE_S = 15.0
"""How long a child gets to stop after SIGTERM before it is killed."""


class DemoError(Exception):
    """The demo cannot go on: says which part failed and where its log is."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Child:
    """A started child process and the file its output goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, name: str, args: list[str], log_path: Path, env: dict[str, str]) -> Child:
        """Start `python args...` with the given environment, output to `log_path`."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                start_new_session=True,
            )
        return cls(name, process, log_path)

    def require_running(self) -> None:
        """Raise DemoError, with the tail of the log, if the child has exited."""
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
            raise DemoError(
                f"the {self.name} exited ({self.process.returncode}); log {self.log_path}:\n"
                + "\n".join(tail)
            )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the grace period."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def worker_readiness(port: int) -> dict[str, object] | None:
    """The worker's /ready answer (ready or not), or None while its web server is not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:
            body: dict[str, object] = json.load(response)
            return body
    except urllib.error.HTTPError as error:
        answer: dict[str, object] = json.load(error)
        return answer
    except (OSError, ValueError):
        return None


def wait_for(child: Child, port: int, *, ready: bool, timeout_s: float) -> None:
    """Poll the worker's readiness page until it answers (and says ready, if asked)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        child.require_running()
        answer = worker_readiness(port)
        if answer is not None and (not ready or answer.get("ready") is True):
            return
        time.sleep(0.25)
    raise DemoError(
        f"the {child.name} did not become {'ready' if ready else 'reachable'} in {timeout_s:.0f} s"
    )
