"""One way to query the audit store, whether this process owns it or the running sink does.

chDB allows one process per data path. While the sink runs on an embedded store it owns the path,
so it serves a tiny loopback HTTP endpoint (token-protected, advertised in a lock file next to
the data directory) and the CLI sends its queries there; when no sink runs, the CLI opens the
store itself. A ClickHouse server needs neither: everyone connects to it directly.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse
from uuid import UUID

from infra.clickhouse.client import MEMORY, chdb_location, is_embedded
from infra.clickhouse.migrate import DEFAULT_TTL_DAYS, migrate

READ_ONLY_PREFIXES = ("select", "with", "show", "describe", "desc", "explain", "exists")


class StoreError(Exception):
    """A query failed or the store could not be reached; carries ClickHouse's message."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Column names and rows of one query."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


class AuditStore(Protocol):
    """Queries and migrations against the audit store."""

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult: ...

    def migrate(self, database: str, ttl_days: int = DEFAULT_TTL_DAYS,
                set_ttl: bool = False) -> list[int]: ...


def require_read_only(sql: str) -> str:
    """The statement, if it is one statement that only reads; analysts' ad-hoc queries never change the
    audit (the engine enforces it too: :class:`ClientStore`)."""
    words = sql.lstrip().split(None, 1)
    if not words or words[0].lower().rstrip("(") not in READ_ONLY_PREFIXES:
        raise StoreError(f"only read-only statements are allowed ({', '.join(READ_ONLY_PREFIXES)})")
    if _statements(sql) > 1:
        raise StoreError("one statement at a time")
    return sql


def _statements(sql: str) -> int:
    """How many statements ``sql`` holds: its ``;`` outside quotes, not counting a trailing one."""
    count, quote, escaped = 1, "", False
    text = sql.rstrip().removesuffix(";")
    for char in text:
        if escaped:
            escaped = False
        elif quote and char == "\\":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"`":
            quote = char
        elif char == ";":
            count += 1
    return count


class ClientStore:
    """The store through a clickhouse-connect client (a server, or chDB owned by this process).

    Queries only read: on the embedded engine each ends with ``SETTINGS readonly = 1`` (on a line of its
    own, so no comment can swallow it; a session-wide SET would outlive a failed query and stop the
    sink's inserts), so the engine itself refuses a write, DDL, a change of settings or a table function
    reaching files or the network, whatever the text looks like; a query with a SETTINGS or FORMAT
    clause of its own is refused too. On a server the reader user (``readonly=1`` in its profile,
    :mod:`infra.clickhouse.users`) does the same.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.read_only = is_embedded(client)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
        if self.read_only:
            sql = sql.rstrip().removesuffix(";") + "\nSETTINGS readonly = 1"
        try:
            result = self.client.query(sql, parameters=parameters)
        except Exception as exc:
            raise StoreError(str(exc)) from exc
        return QueryResult(tuple(result.column_names), [tuple(r) for r in result.result_rows])

    def migrate(self, database: str, ttl_days: int = DEFAULT_TTL_DAYS, set_ttl: bool = False) -> list[int]:
        return migrate(self.client, database, ttl_days, set_ttl)


def lock_path(url: str) -> Path | None:
    """Where a sink running on this embedded store advertises its endpoint (None for a server)."""
    if urlparse(url).scheme.lower() != "chdb":
        return None
    location = chdb_location(url)
    if location == MEMORY:
        return None
    data = Path(location)
    return data.with_name(data.name + ".sink.json")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


class EndpointStore:
    """The store through a running sink's query endpoint (values arrive as JSON)."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 60.0) -> None:
        self.base_url, self.token, self.timeout_s = base_url, token, timeout_s

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            self.base_url + path, data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise StoreError(exc.read().decode(errors="replace")) from exc
        except OSError as exc:
            raise StoreError(f"the sink's query endpoint {self.base_url} is unreachable: {exc}") from exc

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
        answer = self._post("/query", {"sql": sql, "parameters": parameters or {}})
        return QueryResult(tuple(answer["columns"]), [tuple(r) for r in answer["rows"]])

    def migrate(self, database: str, ttl_days: int = DEFAULT_TTL_DAYS, set_ttl: bool = False) -> list[int]:
        answer = self._post("/migrate", {"database": database, "ttl_days": ttl_days, "set_ttl": set_ttl})
        return [int(v) for v in answer["applied"]]


def running_sink(url: str) -> EndpointStore | None:
    """The endpoint of a live sink on this embedded store, if its lock file names a live process."""
    path = lock_path(url)
    if path is None or not path.exists():
        return None
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return EndpointStore(f"http://127.0.0.1:{int(info['port'])}", str(info["token"]))


def open_store(url: str) -> AuditStore:
    """The running sink's endpoint when it owns this embedded store, else a direct client."""
    endpoint = running_sink(url)
    if endpoint is not None:
        return endpoint
    from infra.clickhouse import open_client

    return ClientStore(open_client(url))


class QueryServer:
    """The sink's loopback query endpoint: POST /query and /migrate, bearer-token protected."""

    def __init__(self, store: ClientStore, url: str, port: int = 0) -> None:
        self.store, self.token, self.lock = store, secrets.token_urlsafe(24), lock_path(url)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="audit-query", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the sink logs through logging."""

            def do_POST(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {server.token}":
                    self._reply(403, {"error": "bad token"})
                    return
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                    self._reply(200, server.answer(self.path, body))
                except (StoreError, ValueError, KeyError, TypeError) as exc:
                    self._reply(400, {"error": str(exc)})

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Run one request against the store this process owns: a query only reads (checked here, and
        enforced by the engine, see :class:`ClientStore`)."""
        if path == "/query":
            sql = require_read_only(str(body["sql"]))
            result = self.store.query(sql, dict(body.get("parameters") or {}))
            return {"columns": list(result.columns), "rows": _jsonable(result.rows)}
        if path == "/migrate":
            applied = self.store.migrate(str(body["database"]), int(body["ttl_days"]), bool(body["set_ttl"]))
            return {"applied": applied}
        raise ValueError(f"unknown path {path}")

    def start(self) -> None:
        """Serve, and advertise the endpoint in the lock file (mode 0600: it holds the token)."""
        self.thread.start()
        if self.lock is not None:
            fd = os.open(self.lock, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump({"pid": os.getpid(), "port": self.port, "token": self.token}, handle)

    def stop(self) -> None:
        """Stop serving and withdraw the lock file."""
        if self.lock is not None:
            self.lock.unlink(missing_ok=True)
        self.httpd.shutdown()
        self.httpd.server_close()
