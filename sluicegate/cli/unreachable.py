"""One line instead of a traceback when a command cannot reach Kafka or ClickHouse.

The CLI's entry point runs every command through :func:`one_line`: an aiokafka or clickhouse-connect error
that no command handled ends the command with one line on stderr naming what it tried, e.g.::

    sluicegate: cannot reach Kafka at 127.0.0.1:1: KafkaConnectionError: Unable to bootstrap from ...

and exit status :data:`EXIT_UNREACHABLE`. Any other exception is left alone (a bug keeps its traceback).
The Kafka and ClickHouse clients' own log records of the failed connection are not printed either when
the command configured no logging (services such as the worker and the audit sink configure theirs, and
keep them: their logs come before the line), nor is anything logged after the line.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterator
from typing import Final
from urllib.parse import urlsplit, urlunsplit

EXIT_UNREACHABLE: Final = 1
"""The exit status of a command that could not reach Kafka or ClickHouse (that of every CLI error)."""
MAX_DETAIL: Final = 300
"""The error's own text is cut to this many characters."""
CLIENT_LOGGERS: Final = ("aiokafka", "clickhouse_connect")

_UNREACHABLE_KAFKA: Final = ("KafkaConnectionError", "KafkaTimeoutError", "NodeNotReadyError",
                              "RequestTimedOutError")
_KAFKA_HOSTS = re.compile(r"\('([^']+)', (\d+),")
_CLICKHOUSE_URL = re.compile(r"\((https?://[^)\s]+)\)")
_USERINFO = re.compile(r"(\w+://)[^/\s@]+@")
"""The user and password of a URL in an error's text: never printed."""


def quiet_client_logs() -> None:
    """Without logging configured, the clients' records of a failed connection print nothing (the one
    line says it); a command that configures logging still gets them."""
    for name in CLIENT_LOGGERS:
        logging.getLogger(name).addHandler(logging.NullHandler())


def one_line(command: Callable[[], object]) -> None:
    """Run ``command``; an unreachable Kafka or ClickHouse ends it with one line and EXIT_UNREACHABLE."""
    try:
        command()
    except Exception as exc:
        line = describe(exc)
        if line is None:
            raise
        print(f"sluicegate: {line}", file=sys.stderr, flush=True)
        logging.disable(logging.CRITICAL)  # nothing after the line: clients the command left open say so
        raise SystemExit(EXIT_UNREACHABLE) from None


def describe(exc: BaseException) -> str | None:
    """The line for a Kafka or ClickHouse error anywhere in ``exc``'s chain, None for anything else."""
    for error in _chain(exc):
        line = _kafka(error) or _clickhouse(error)
        if line is not None:
            return line
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and the members of exception groups, each once."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        error = pending.pop(0)
        if id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        pending.extend(e for e in (error.__cause__, error.__context__) if e is not None)


def _kafka(error: BaseException) -> str | None:
    errors = sys.modules.get("aiokafka.errors")  # not imported: no Kafka client ran, nothing to report
    if errors is None or not isinstance(error, errors.KafkaError):
        return None
    where = f"Kafka at {_kafka_address(error)}"
    unreachable = isinstance(error, tuple(getattr(errors, name) for name in _UNREACHABLE_KAFKA))
    return f"{'cannot reach ' if unreachable else ''}{where}: {_detail(error)}"


def _clickhouse(error: BaseException) -> str | None:
    exceptions = sys.modules.get("clickhouse_connect.driver.exceptions")
    if exceptions is None or not isinstance(error, exceptions.Error):
        return None
    where = f"ClickHouse at {_clickhouse_url(error)}"
    unreachable = isinstance(error, exceptions.OperationalError)
    return f"{'cannot reach ' if unreachable else ''}{where}: {_detail(error)}"


def _detail(error: BaseException) -> str:
    text = _USERINFO.sub(r"\1", " ".join(str(error).split())) or type(error).__name__
    if not text.startswith(type(error).__name__):
        text = f"{type(error).__name__}: {text}"
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL - 3] + "..."


def _kafka_address(error: BaseException) -> str:
    """The hosts aiokafka names in its error, else the command's ``--bootstrap``, else the settings'."""
    hosts = _KAFKA_HOSTS.findall(str(error))
    if hosts:
        return ",".join(f"{host}:{port}" for host, port in dict.fromkeys(hosts))
    args = sys.argv[1:]
    for index, arg in enumerate(args):
        if arg == "--bootstrap" and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--bootstrap="):
            return arg.split("=", 1)[1]
    return _from_settings(lambda settings: settings.bootstrap_servers)


def _clickhouse_url(error: BaseException) -> str:
    """The URL the client names in its error, else the settings' (without any password)."""
    found = _CLICKHOUSE_URL.search(str(error))
    url = found.group(1) if found else _from_settings(lambda settings: settings.audit_url)
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _from_settings(pick: Callable[..., str]) -> str:
    from sluicegate.settings import Settings

    try:
        return pick(Settings())
    except Exception:  # settings that do not load are another command's error to report
        return "the configured address"
