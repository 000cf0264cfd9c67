"""Operating-system helpers for the launcher: tools on PATH, processes, ports, locks, log tails."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

MIN_JAVA = 17
_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


class LauncherError(Exception):
    """A problem the user can fix (missing tool, port taken, broker died); shown without a traceback."""


def java_major(version_output: str) -> int | None:
    """The major Java version in ``java -version`` output (``1.8`` counts as 8)."""
    match = _JAVA_VERSION.search(version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java() -> str:
    """The ``java`` executable (``$JAVA_HOME/bin/java`` first, else PATH), checked to be Java 17+."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    java = str(candidate) if candidate is not None and candidate.is_file() else shutil.which("java")
    if java is None:
        raise LauncherError(
            f"Java {MIN_JAVA}+ is needed to run the Kafka broker, but `java` is not on PATH "
            "(install OpenJDK 17, or set JAVA_HOME)"
        )
    try:
        probe = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LauncherError(f"could not run {java} -version: {exc}") from exc
    major = java_major(probe.stderr + probe.stdout)
    if major is None or major < MIN_JAVA:
        raise LauncherError(f"Java {MIN_JAVA}+ is needed to run the Kafka broker; {java} is version {major}")
    return java


def find_mvn() -> str:
    """The ``mvn`` executable on PATH."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LauncherError(
            "Maven (`mvn`) is needed once to download the Kafka broker jars from Maven Central, "
            "but it is not on PATH (install Maven, e.g. `apt-get install maven`)"
        )
    return mvn


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` (we could bind it ourselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn_detached(argv: list[str], *, cwd: Path, log: Path) -> int:
    """Start ``argv`` in its own session (process group) with stdout and stderr appended to ``log``."""
    with log.open("ab") as out:
        child = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[child.pid] = child  # reaped by pid_alive() when started from this process
    return child.pid


def exit_code(pid: int) -> int | None:
    """The exit code of a child this process spawned, once it has exited."""
    child = _children.get(pid)
    return None if child is None else child.poll()


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs (zombies count as dead)."""
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rpartition(")")[2].split()[0] != "Z"
    return True


def cmdline(pid: int) -> str | None:
    """The command line of ``pid`` where ``/proc`` exists, else None."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
