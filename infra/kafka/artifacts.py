"""The broker's jars: fetched once from Maven Central with the machine's Maven into a cache directory.

Layout: ``<cache_dir>/<version>/libs/*.jar`` plus ``jars.txt`` (the manifest, written last). A complete
cache is used without running Maven at all; otherwise Maven runs offline first (the local repository may
already hold everything) and online only when that fails.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from infra.kafka.process import LauncherError, file_lock, find_mvn
from infra.kafka.templates import render_file

RELOAD4J_VERSION = "1.2.25"
SLF4J_VERSION = "1.7.36"
DEPENDENCY_PLUGIN_VERSION = "2.8"
MANIFEST = "jars.txt"
MVN_TIMEOUT_S = 900


def cached_libs(cache_dir: Path, version: str) -> Path | None:
    """The ``libs`` directory for ``version`` when the cache holds every jar of its manifest."""
    root = cache_dir / version
    try:
        names = [n for n in (root / MANIFEST).read_text().splitlines() if n]
    except OSError:
        return None
    libs = root / "libs"
    if names and all((libs / name).is_file() for name in names):
        return libs
    return None


def render_pom(version: str) -> str:
    """The pom whose runtime dependencies are the broker's classpath."""
    return render_file(
        "pom.xml",
        {
            "KAFKA_VERSION": version,
            "RELOAD4J_VERSION": RELOAD4J_VERSION,
            "SLF4J_VERSION": SLF4J_VERSION,
            "DEPENDENCY_PLUGIN_VERSION": DEPENDENCY_PLUGIN_VERSION,
        },
    )


def mvn_command(mvn: str, pom: Path, libs: Path, *, offline: bool) -> list[str]:
    """The Maven invocation that copies the runtime dependencies of ``pom`` into ``libs``."""
    return [
        mvn,
        "-B",
        "-q",
        "-Dstyle.color=never",
        *(["-o"] if offline else []),
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
    ]


def _run_mvn(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=MVN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LauncherError(f"Maven did not finish within {MVN_TIMEOUT_S} s: {' '.join(argv)}") from exc


def ensure_artifacts(version: str, cache_dir: Path) -> Path:
    """The ``libs`` directory holding Kafka ``version``'s broker jars, downloading them if needed."""
    libs = cached_libs(cache_dir, version)
    if libs is not None:
        return libs
    cache_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(cache_dir / f".{version}.lock"):
        libs = cached_libs(cache_dir, version)  # another process may have filled it meanwhile
        if libs is not None:
            return libs
        mvn = find_mvn()
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=cache_dir))
        try:
            pom = staging / "pom.xml"
            pom.write_text(render_pom(version), encoding="utf-8")
            staged_libs = staging / "libs"
            result = _run_mvn(mvn_command(mvn, pom, staged_libs, offline=True))
            if result.returncode != 0:
                result = _run_mvn(mvn_command(mvn, pom, staged_libs, offline=False))
            if result.returncode != 0:
                output = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
                raise LauncherError(f"Maven could not fetch Kafka {version} from Maven Central:\n{output}")
            jars = sorted(p.name for p in staged_libs.glob("*.jar"))
            if f"kafka_2.13-{version}.jar" not in jars:
                raise LauncherError(f"Maven ran but kafka_2.13-{version}.jar is not among the fetched jars")
            (staging / MANIFEST).write_text("\n".join(jars) + "\n")
            target = cache_dir / version
            if target.exists():
                shutil.rmtree(target)  # an incomplete earlier attempt
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    libs = cached_libs(cache_dir, version)
    if libs is None:
        raise LauncherError(f"the artifact cache {cache_dir / version} is incomplete after Maven ran")
    return libs
