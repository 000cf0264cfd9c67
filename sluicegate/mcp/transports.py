"""Where the proxy's two sides connect: the upstream server (a command over stdio, or a streamable-HTTP
URL) and the downstream agent (stdio, or streamable HTTP on ``HOST:PORT``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server

SECRET_PREFIX = "SLUICEGATE_"
"""Settings that never reach the upstream server's environment (the agent's credential among them)."""


@dataclass(frozen=True)
class Upstream:
    """The real server: ``url`` (streamable HTTP) or ``command`` (spawned, spoken to over stdio)."""

    url: str | None = None
    command: Sequence[str] = ()

    def __post_init__(self) -> None:
        if bool(self.url) == bool(self.command):
            raise ValueError("give the upstream server as --upstream URL or as a command after --, not both")

    def describe(self) -> str:
        return self.url or " ".join(self.command)


def server_environment() -> dict[str, str]:
    """The proxy's environment without sluicegate's settings: the server gets its own variables, never
    the agent's credential."""
    return {name: value for name, value in os.environ.items() if not name.startswith(SECRET_PREFIX)}


@asynccontextmanager
async def connect(upstream: Upstream) -> AsyncIterator[tuple[ClientSession, types.InitializeResult]]:
    """An initialized client session with the upstream server, closed (and the server stopped) on exit."""
    if upstream.url:
        async with (streamable_http_client(upstream.url) as (read, write),
                    ClientSession(read, write) as session):
            yield session, await session.initialize()
        return
    command, *args = upstream.command
    parameters = StdioServerParameters(command=command, args=args, env=server_environment())
    async with stdio_client(parameters) as (read, write), ClientSession(read, write) as session:
        yield session, await session.initialize()


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen takes HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


async def serve_stdio(server: Server[Any]) -> None:
    """Serve one agent over this process's stdin/stdout (what desktop clients spawn)."""
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


async def serve_http(server: Server[Any], host: str, port: int, path: str = "/mcp") -> None:
    """Serve streamable HTTP at ``http://HOST:PORT/mcp`` until cancelled."""
    import uvicorn

    app = server.streamable_http_app(streamable_http_path=path, host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve()
