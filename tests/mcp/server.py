"""The real MCP server behind the proxy in the tests (the ``mcp`` SDK's own server).

Every tool call appends the tool's name to the file ``MCP_TEST_CALLS`` names, so a test sees which calls
reached it. ``python tests/mcp/server.py`` serves stdio; ``--http PORT`` serves streamable HTTP on
127.0.0.1:PORT/mcp.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

server = MCPServer("demo", instructions="A demo server for sluicegate's MCP proxy tests.")


def called(tool: str) -> None:
    with Path(os.environ["MCP_TEST_CALLS"]).open("a", encoding="utf-8") as calls:
        calls.write(tool + "\n")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def echo(text: str) -> str:
    """Say it back."""
    called("echo")
    return f"echo: {text}"


@server.tool()
def count(n: int) -> str:
    """Count one call."""
    called("count")
    return f"counted {n}"


@server.tool()
def refund(customer: str, amount: float) -> str:
    """Refund a customer."""
    called("refund")
    return f"refunded {amount} to {customer}"


@server.tool()
def deploy(service: str) -> str:
    """Deploy a service (needs an approval)."""
    called("deploy")
    return f"deployed {service}"


@server.tool(annotations=ToolAnnotations(destructive_hint=True))
def wipe(path: str) -> str:
    """Delete everything under a path (always blocked)."""
    called("wipe")
    return f"wiped {path}"


@server.tool()
def shutdown() -> str:
    """No rule mentions it: the policy's default BLOCKs it."""
    called("shutdown")
    return "down"


@server.resource("notes://today", mime_type="text/plain")
def today() -> str:
    return "ship the proxy"


@server.prompt()
def greet(name: str) -> str:
    """A greeting."""
    return f"Say hello to {name}."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, default=None)
    port = parser.parse_args().http
    if port is None:
        server.run()
    else:
        server.run("streamable-http", host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
