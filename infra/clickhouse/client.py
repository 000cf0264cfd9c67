"""Open a clickhouse-connect client from a URL; the rest of the code never knows which engine it is.

``chdb:///abs/path`` (or ``chdb://memory``) is clickhouse-connect's in-process chDB backend: the real
ClickHouse engine, no server. chDB allows one engine per process, so the client is cached per process:
every call with the same path returns the same client, and a second, different path raises
:class:`ClickHouseUrlError`. Callers must not close a chDB client and should qualify table names with
their database rather than rely on ``USE``. ``http(s)://user:password@host:8123/db`` opens a new client
to a ClickHouse server.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

MEMORY = ":memory:"

_lock = threading.Lock()
_embedded: tuple[str, Client] | None = None


class ClickHouseUrlError(ValueError):
    """The ClickHouse URL is malformed, unsupported, or names a second embedded engine."""


def chdb_location(url: str) -> str:
    """The engine location of a ``chdb://`` URL: an absolute, resolved directory or ``:memory:``."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "chdb":
        raise ClickHouseUrlError(f"not a chdb:// URL: {url!r}")
    if parts.netloc in ("memory", ":memory:") and parts.path in ("", "/"):
        return MEMORY
    if parts.netloc:
        raise ClickHouseUrlError(
            f"chDB URL {url!r} must name an absolute directory (chdb:///abs/path) or be chdb://memory"
        )
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ClickHouseUrlError(f"chDB URL {url!r} must name an absolute directory (chdb:///abs/path)")
    return os.path.realpath(path)


def _open_embedded(url: str) -> Client:
    global _embedded
    location = chdb_location(url)
    with _lock:
        if _embedded is not None:
            open_location, client = _embedded
            if open_location != location:
                raise ClickHouseUrlError(
                    f"this process already runs the embedded ClickHouse at {open_location}; chDB allows one "
                    f"engine per process, so {location} cannot be opened too (use the same URL, or a server)"
                )
            return client
        path = None if location == MEMORY else location
        if path is not None:
            Path(path).mkdir(parents=True, exist_ok=True)
        client = clickhouse_connect.get_client(interface="chdb", path=path)
        _embedded = (location, client)
        return client


def is_embedded(client: object) -> bool:
    """Whether ``client`` is this process's embedded engine (opened by :func:`open_client`)."""
    return _embedded is not None and _embedded[1] is client


def open_client(url: str) -> Client:
    """A clickhouse-connect client for ``url``: ``chdb://`` (embedded, cached) or ``http(s)://`` (server)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "chdb":
        return _open_embedded(url)
    if scheme in ("http", "https"):
        return clickhouse_connect.get_client(dsn=url)
    raise ClickHouseUrlError(
        f"unsupported ClickHouse URL {url!r}: use chdb:///abs/path for the embedded engine "
        "or http(s)://host:8123 for a server"
    )
