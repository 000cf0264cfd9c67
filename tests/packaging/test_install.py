"""The wheel as users install it: ``pip install sluicegate`` is slim, extras are named, its data ships.

The wheel is built from a copy of the sources (a stale ``build/`` in the checkout cannot leak into it)
and installed into fresh virtual environments, one with no extras and one with ``[all]``. Every command
runs from a temporary directory outside the checkout with the venv's own interpreter, so nothing can
come from the checkout.

The wheel's requirements are resolved by pip from PyPI and kept in a wheelhouse
(``~/.cache/sluicegate/wheelhouse``, or ``SLUICEGATE_WHEELHOUSE``), as the Kafka jars are kept: the
venvs are installed from it with ``--no-index``, and pip downloads into it only when the wheel needs
something it lacks (the first run, a new requirement). pip's own cache does not keep downloads here,
and ``[all]`` is ~280 MB of wheels (chDB, pyarrow), 1-2 minutes to fetch; from the wheelhouse both
venvs install in ~20 s. Installs skip byte-compiling (``--no-compile``), which only costs time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra.kafka.process import file_lock
from sluicegate.cli.extras import EXTRA_MODULES, missing_extra_message

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("probe_data.py")
PACKAGES = ("schemas", "streams", "consumers", "sluicegate", "infra", "policies")
CHECKOUT_VARIABLES = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
NOT_IN_SLIM = sorted({module for modules in EXTRA_MODULES.values() for module in modules})
SOURCE_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".state", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)


def wheelhouse() -> Path:
    configured = os.environ.get("SLUICEGATE_WHEELHOUSE")
    return Path(configured) if configured else Path.home() / ".cache" / "sluicegate" / "wheelhouse"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that points into the checkout or its settings."""
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("SLUICEGATE_", "KAFKA_")) and key not in CHECKOUT_VARIABLES
    }
    return {**env, "COLUMNS": "160", **extra}


def run(
    args: Sequence[str | Path], cwd: Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(arg) for arg in args], cwd=cwd, env=clean_env(**env), capture_output=True,
                          text=True, timeout=timeout, check=False)


@dataclass(frozen=True)
class Venv:
    """A fresh virtual environment with the wheel installed."""

    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def sluicegate(self) -> Path:
        return self.root / "bin" / "sluicegate"


def _pip(python: Path, *args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The test suite's pip acting on ``python``'s environment (``pip --python``)."""
    command = [sys.executable, "-m", "pip", "--python", str(python), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False,
                          env=clean_env())


def install(venv_dir: Path, requirement: str) -> Venv:
    """``python -m venv`` and ``pip install requirement``, its dependencies from the wheelhouse."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv_dir)], check=True)
    venv = Venv(venv_dir)
    house = wheelhouse()
    offline = ("install", "--no-compile", "--no-index", "--find-links", house, requirement)
    with file_lock(house.with_name("wheelhouse.lock")):
        if _pip(venv.python, *offline).returncode != 0:
            fetched = _pip(venv.python, "download", "--dest", house, requirement)
            assert fetched.returncode == 0, fetched.stdout + fetched.stderr
            for stale in house.glob("sluicegate-*"):  # the wheel under test is never taken from there
                stale.unlink()
            installed = _pip(venv.python, *offline)
            assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout (without venvs, build output and caches) to build from."""
    copy = tmp_path_factory.mktemp("source") / "sluicegate"
    shutil.copytree(ROOT, copy, ignore=SOURCE_IGNORE)
    return copy


@pytest.fixture(scope="module")
def wheel(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(dist), "-q"],
        capture_output=True, text=True, timeout=300, check=False, env=clean_env(),
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = dist.glob("sluicegate-*.whl")
    return path


@pytest.fixture(scope="module")
def slim(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    return install(tmp_path_factory.mktemp("venv") / "slim", str(wheel))


@pytest.fixture(scope="module")
def full(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    return install(tmp_path_factory.mktemp("venv") / "all", f"{wheel}[all]")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory outside the checkout holding a copy of the example policies."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "policies" / "examples", work / "policies" / "examples")
    return work


# --- the wheel itself ------------------------------------------------------------------------------


def test_every_file_of_the_packages_is_in_the_wheel(source: Path, wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    expected = {
        path.relative_to(source).as_posix()
        for package in PACKAGES
        for path in (source / package).rglob("*")
        if path.is_file() and path.suffix != ".md"
    }
    assert expected - shipped == set()
    top_level = {name.split("/")[0] for name in shipped if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == set(PACKAGES)


# --- pip install sluicegate (no extras) ---------------------------------------------------------------


def test_the_slim_install_has_none_of_the_extras(slim: Venv, outside: Path) -> None:
    probe = (
        "import importlib.util, json\n"
        f"print(json.dumps({{m: importlib.util.find_spec(m) is not None for m in {NOT_IN_SLIM!r}}}))\n"
    )
    found = run([slim.python, "-c", probe], outside)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == dict.fromkeys(NOT_IN_SLIM, False)


def test_the_slim_install_guards_tools(slim: Venv, outside: Path) -> None:
    script = (
        "import sluicegate\n"
        "ring = sluicegate.trust.KeyRing.generate()\n"
        "credential = sluicegate.AgentCredential.issue(ring, 'support-7', 'support', 'production',\n"
        "                                              'team-support')\n"
        "gate = sluicegate.Gate('127.0.0.1:9', credential=credential)\n"
        "print(type(gate).__name__, gate.identity.agent_id, sluicegate.__file__)\n"
    )
    made = run([slim.python, "-c", script], outside)
    assert made.returncode == 0, made.stderr
    name, agent, where = made.stdout.split()
    assert (name, agent) == ("Gate", "support-7")
    assert Path(where).is_relative_to(slim.root)


def test_the_slim_install_checks_tests_and_evaluates_policies(slim: Venv, outside: Path) -> None:
    policy = "policies/examples/financial.yaml"
    assert run([slim.sluicegate, "--help"], outside).returncode == 0

    checked = run([slim.sluicegate, "policy", "check", policy], outside)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK: policy financial" in checked.stdout

    tested = run([slim.sluicegate, "policy", "test", policy], outside)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert re.search(r"\d+ passed, 0 failed", tested.stdout), tested.stdout

    intents = [_intent("payments.create", amount) for amount in (10, 25_000, 30_000)]
    evaluated = subprocess.run(
        [str(slim.sluicegate), "evaluate", "--policy", policy], input="\n".join(intents) + "\n",
        cwd=outside, env=clean_env(), capture_output=True, text=True, timeout=60, check=False,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    decisions = [json.loads(line)["decision"] for line in evaluated.stdout.splitlines()]
    assert decisions == ["ALLOW", "REQUIRE_APPROVAL", "BLOCK"]


def _intent(tool: str, amount: float) -> str:
    return json.dumps({
        "request_id": f"00000000-0000-4000-8000-{int(amount):012d}", "agent_id": "fin-1",
        "agent_role": "finance", "environment": "production", "tool": tool, "action": "create",
        "target": "bank:payments", "params": {"amount": amount},
        "occurred_at": datetime(2025, 3, 3, 10, tzinfo=UTC).isoformat(),
    })


@pytest.mark.parametrize(("name", "args", "extras"), [
    ("worker", [], ("worker",)),
    ("audit report", [], ("audit",)),
    ("audit migrate", [], ("audit",)),
    ("backtest", ["--policy", "policies/examples/financial.yaml"], ("audit",)),
    ("slack run", [], ("slack",)),
    ("mcp proxy", ["--server", "files", "--", "true"], ("mcp",)),
    ("demo", ["--no-live"], ("worker", "audit")),
])
def test_a_command_of_a_missing_extra_names_it(
    slim: Venv, outside: Path, name: str, args: list[str], extras: tuple[str, ...]
) -> None:
    answered = run([slim.sluicegate, *name.split(), *args], outside, timeout=60)
    assert answered.returncode == 1, answered.stdout + answered.stderr
    assert answered.stderr.strip() == missing_extra_message(name, extras)
    assert answered.stdout == ""


# --- pip install 'sluicegate[all]' --------------------------------------------------------------------


def test_the_installed_package_opens_only_its_own_files(full: Venv, outside: Path) -> None:
    probed = run([full.python, PROBE], outside)
    assert probed.returncode == 0, probed.stdout + probed.stderr
    answer = json.loads(probed.stdout)
    site = Path(answer["site"])
    assert site.is_relative_to(full.root)
    files = {label: Path(path) for label, path in answer["files"].items()}
    outside_site = {label: str(path) for label, path in files.items() if not path.is_relative_to(site)}
    assert outside_site == {}
    assert [label for label, path in files.items() if not path.is_file()] == []
    examples = {path.name for path in (ROOT / "policies" / "examples").glob("*.yaml")}
    assert {label.removeprefix("example ") for label in files if label.startswith("example ")} == examples
    assert any(label.startswith("migration ") for label in files)


@pytest.mark.integration
def test_the_demo_runs_from_the_wheel(full: Venv, outside: Path, kafka_bootstrap: str) -> None:
    completed = run(
        [full.sluicegate, "demo", "--agents", "40", "--rate", "40", "--seconds", "8", "--no-live"],
        outside, timeout=300, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        SLUICEGATE_STATE_DIR=str(outside / "state"),
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    decided = re.search(r"decisions: (\d+)", output)
    assert decided and int(decided.group(1)) >= 200, output[-4000:]
    assert "audit report (ClickHouse)" in output
    stored = re.search(r"│ ALLOW\s+│ True\s+│ (\d+)", output)
    assert stored and int(stored.group(1)) > 0, "no stored decisions in the report:\n" + output[-4000:]
