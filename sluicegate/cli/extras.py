"""Commands that need an optional extra say which one, instead of an ImportError traceback.

``pip install sluicegate`` is the agent's install (the SDK and the policy tools); the worker, the audit
and the Slack bot need extras. A command imports what its extra provides inside ``require``::

    with require("worker", command="worker"):
        from streams.worker import run

and when the extra is missing it prints one line and exits 1::

    sluicegate worker needs the worker extra: pip install 'sluicegate[worker]'
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import typer

EXIT_MISSING_EXTRA: Final = 1

EXTRA_MODULES: Final[dict[str, tuple[str, ...]]] = {
    "worker": ("faust", "mode", "rocksdict", "prometheus_client"),
    "audit": ("clickhouse_connect", "chdb", "pyarrow"),
    "slack": ("slack_bolt", "slack_sdk", "aiohttp"),
    "mcp": ("mcp", "mcp_types", "uvicorn"),
    "langchain": ("langchain_core", "langgraph"),
    "openai-agents": ("agents",),
}
"""The top-level modules each extra installs that sluicegate imports (see pyproject.toml)."""


def missing_extra_message(command: str, extras: tuple[str, ...]) -> str:
    """The one line a command prints when ``extras`` are not installed."""
    names = " and ".join(extras) + (" extras" if len(extras) > 1 else " extra")
    return f"sluicegate {command} needs the {names}: pip install 'sluicegate[{','.join(extras)}]'"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that fails to import, or a module blocked in sys.modules
        return False


@contextmanager
def require(*extras: str, command: str, check_installed: bool = True) -> Iterator[None]:
    """Run the block (the command's imports) with ``extras``; exit with the message when one is missing.

    With ``check_installed`` every module of the extras must be installed before the block runs (the
    demo's child processes need them, and chDB is only imported once a store opens). A
    ``ModuleNotFoundError`` for one of those modules raised in the block gives the same message.
    """
    unknown = [extra for extra in extras if extra not in EXTRA_MODULES]
    if unknown:
        raise ValueError(f"unknown extras {unknown}; known: {sorted(EXTRA_MODULES)}")
    modules = {module for extra in extras for module in EXTRA_MODULES[extra]}
    if check_installed and not all(_installed(module) for module in sorted(modules)):
        raise _missing(command, extras)
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in modules:
            raise
        raise _missing(command, extras) from exc


def _missing(command: str, extras: tuple[str, ...]) -> typer.Exit:
    typer.echo(missing_extra_message(command, extras), err=True)
    return typer.Exit(EXIT_MISSING_EXTRA)
