"""``sluicegate mcp proxy``: put sluicegate in front of any MCP server, without changing the agent.

    sluicegate mcp proxy --server files -- npx -y @modelcontextprotocol/server-filesystem /srv
    sluicegate mcp proxy --server crm --upstream http://crm:8000/mcp --listen 127.0.0.1:8700
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from sluicegate.cli.extras import require
from sluicegate.errors import InvalidCredential
from sluicegate.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
app = typer.Typer(name="mcp", help="Govern the tool calls of MCP clients (Claude, Cursor, agents SDKs).")


@app.command("proxy")
def proxy_command(
    server: Annotated[str, typer.Option(
        "--server", help="The server's name: tools become NAME.<tool>, the target mcp:NAME.")],
    command: Annotated[list[str] | None, typer.Argument(
        help="The upstream server's command and arguments, after --.", show_default=False)] = None,
    upstream: Annotated[str | None, typer.Option(
        "--upstream", help="The upstream server's streamable-HTTP URL (instead of a command).")] = None,
    listen: Annotated[str | None, typer.Option(
        "--listen", help="Serve streamable HTTP on HOST:PORT (path /mcp) instead of stdio.")] = None,
    mapping: Annotated[Path | None, typer.Option(
        "--mapping", help="YAML: per-tool action, target template, fail_open; resources, prompts.")] = None,
    policy: Annotated[Path | None, typer.Option(
        "--policy", help="The policy the workers run: tools/list hides what it always BLOCKs.")] = None,
    list_blocked: Annotated[bool, typer.Option(
        "--list-blocked", help="Keep the tools the policy always BLOCKs in tools/list.")] = False,
    approval_wait: Annotated[float, typer.Option(
        "--approval-wait", min=1, help="Seconds a call waits for an approval's final decision.")] = 900.0,
    progress_interval: Annotated[float, typer.Option(
        "--progress-interval", min=0.1, help="Seconds between progress notifications while waiting.")] = 5.0,
    agent_id: Annotated[str | None, typer.Option(
        "--agent-id", help="Trust off only: the agent's id (with a credential, the credential's).")] = None,
    agent_role: Annotated[str | None, typer.Option("--agent-role", help="Trust off only.")] = None,
    environment: Annotated[str | None, typer.Option("--environment", help="Trust off only.")] = None,
) -> None:
    """Serve MCP to the agent and forward each tool call to the real server only when sluicegate allows it.

    The agent's identity is its credential (SLUICEGATE_AGENT_CREDENTIAL); the upstream server is started
    without any SLUICEGATE_ variable in its environment. Logs go to stderr (stdout is the MCP channel).
    """
    with require("mcp", command="mcp proxy"):
        from sluicegate.mcp.mapping import MappingError
        from sluicegate.mcp.runner import ProxyOptions, run_proxy
        from sluicegate.mcp.transports import Upstream
        from streams.engine.errors import PolicyError

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the gate logs what an outage means
    try:
        options = ProxyOptions(
            server=server, upstream=Upstream(upstream, tuple(command or ())), listen=listen, mapping=mapping,
            policy=policy, list_blocked=list_blocked, approval_wait_s=approval_wait,
            progress_interval_s=progress_interval, agent_id=agent_id, agent_role=agent_role,
            environment=environment,
        )
        asyncio.run(run_proxy(options, Settings()))
    except (ValueError, MappingError, PolicyError, InvalidCredential) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass
