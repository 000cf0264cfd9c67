"""``sluicegate mcp proxy`` end to end: the mcp SDK's client -> proxy -> a real MCP server, with a real
worker (trust on) deciding every tools/call. stdio and streamable HTTP on both sides of the proxy.

Each test uses its own agent credential, so per-agent limits do not mix. The killed-worker test runs
last: it kills the module's worker.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp.client.session import ClientSession

from sluicegate.trust import AgentCredential
from tests.mcp.conftest import (
    Calls,
    Deployment,
    http_proxy,
    outcomes_of,
    proxy_argv,
    stdio_proxy,
)
from tests.streams.harness import ROOT

pytestmark = pytest.mark.integration
LISTED = {"echo", "count", "refund", "deploy"}
"""What tools/list shows: wipe (a BLOCK rule) and shutdown (no rule, default BLOCK) are hidden."""


def text(result: types.CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, types.TextContent))


async def call(
    session: ClientSession, tool: str, arguments: dict[str, Any], **options: Any
) -> types.CallToolResult:
    result = await session.call_tool(tool, arguments, **options)
    assert isinstance(result, types.CallToolResult)
    return result


async def check_allow_block_and_listing(session: ClientSession, calls: Calls) -> None:
    """The checks both transports share: listing, an ALLOW, a conditional and an unconditional BLOCK."""
    assert {tool.name for tool in (await session.list_tools()).tools} == LISTED

    echoed = await call(session, "echo", {"text": "hi"})
    assert (echoed.is_error, text(echoed), calls("echo")) == (False, "echo: hi", 1)

    refused = await call(session, "refund", {"customer": "c1", "amount": 500})
    assert refused.is_error
    assert "large-refunds: refunds over 100 need a human" in text(refused)
    assert "small-refunds" not in text(refused)
    small = await call(session, "refund", {"customer": "c1", "amount": 50})
    assert (small.is_error, text(small)) == (False, "refunded 50.0 to c1")

    wiped = await call(session, "wipe", {"path": "/"})  # hidden, called anyway: still decided
    assert wiped.is_error and "no-wipes: wiping is never allowed" in text(wiped)
    assert (calls("refund"), calls("wipe")) == (1, 0)


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "sluicegate.cli", "approvals", *args]
    return await asyncio.to_thread(subprocess.run, argv, cwd=ROOT, env=env, capture_output=True, text=True,
                                   timeout=120)


async def approve_when_pending(deployment: Deployment, agent_id: str) -> str:
    """Approve the agent's pending request with the CLI, once ``approvals list`` shows it."""
    env = deployment.reviewer_env()
    while True:
        listed = await cli(env, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
        mine = [row for row in rows if row["agent_id"] == agent_id]
        if mine:
            break
    request_id = str(mine[0]["request_id"])
    approved = await cli(env, "approve", request_id)
    assert approved.returncode == 0, approved.stderr
    return request_id


async def check_approval(session: ClientSession, deployment: Deployment, agent: AgentCredential,
                         calls: Calls) -> None:
    """deploy needs an approval: the call waits (with progress), runs once the CLI approves it."""
    progress: list[str] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    waiting = asyncio.create_task(call(session, "deploy", {"service": "web"}, progress_callback=on_progress))
    request_id = await approve_when_pending(deployment, agent.agent_id)
    result = await asyncio.wait_for(waiting, 120)
    assert (result.is_error, text(result), calls("deploy")) == (False, "deployed web", 1)
    assert any(request_id in message for message in progress), progress


async def test_stdio_proxy_allows_blocks_hides_and_records(
    deployment: Deployment, calls: Calls, tmp_path: Path
) -> None:
    agent = deployment.agent("stdio")
    env, argv = deployment.env(agent, calls.path), proxy_argv(deployment)
    async with stdio_proxy(env, argv, tmp_path / "p.log") as s:
        await check_allow_block_and_listing(s, calls)
        resources = await s.list_resources()
        assert [str(r.uri) for r in resources.resources] == ["notes://today"]
        read = await s.read_resource("notes://today")
        contents = [c.text for c in read.contents if isinstance(c, types.TextResourceContents)]
        assert contents == ["ship the proxy"]
        prompt = await s.get_prompt("greet", {"name": "Ada"})
        assert [m.content.text for m in prompt.messages if isinstance(m.content, types.TextContent)] == [
            "Say hello to Ada."]
    names = deployment.worker.names
    outcomes = await outcomes_of(deployment.worker.bootstrap, names.outcomes, agent.agent_id, 2)
    # the refused calls did not run: no outcome
    assert [(o["tool"], o["status"]) for o in outcomes] == [("demo.echo", "success"),
                                                            ("demo.refund", "success")]


async def test_stdio_approval_waits_with_progress_and_runs_after_cli_approval(
    deployment: Deployment, calls: Calls, tmp_path: Path
) -> None:
    agent = deployment.agent("approval")
    env, argv = deployment.env(agent, calls.path), proxy_argv(deployment)
    async with stdio_proxy(env, argv, tmp_path / "p.log") as s:
        await check_approval(s, deployment, agent, calls)


async def test_a_limit_stops_the_51st_call_and_list_blocked_keeps_tools_listed(
    deployment: Deployment, calls: Calls, tmp_path: Path
) -> None:
    agent = deployment.agent("limit")
    argv = proxy_argv(deployment, "--list-blocked")
    async with stdio_proxy(deployment.env(agent, calls.path), argv, tmp_path / "p.log") as s:
        assert {tool.name for tool in (await s.list_tools()).tools} == {*LISTED, "wipe", "shutdown"}
        results = [await call(s, "count", {"n": n}) for n in range(1, 52)]
    assert [r.is_error for r in results] == [False] * 50 + [True]
    assert "fifty-counts: 50 actions already in 1h (at most 50)" in text(results[-1])
    assert calls("count") == 50


async def test_http_proxy_allows_blocks_hides_and_waits_for_approval(
    deployment: Deployment, calls: Calls, tmp_path: Path
) -> None:
    agent = deployment.agent("http")
    async with http_proxy(deployment.env(agent, calls.path), proxy_argv(deployment), tmp_path) as s:
        await check_allow_block_and_listing(s, calls)
        await check_approval(s, deployment, agent, calls)


async def test_a_killed_worker_gives_fail_closed_errors_not_forwarded_calls(
    deployment: Deployment, calls: Calls, tmp_path: Path
) -> None:
    """Last: kills the module's worker. Both transports: the call is refused, the server never sees it."""
    agent = deployment.agent("killed")
    env = deployment.env(agent, calls.path, decision_timeout_s=5)
    argv = proxy_argv(deployment)
    async with (stdio_proxy(env, argv, tmp_path / "p.log") as stdio,
                http_proxy(env, argv, tmp_path) as http):
        for session in (stdio, http):  # no tools/list first: the proxy reads echo's annotations itself
            assert not (await call(session, "echo", {"text": "up"})).is_error
        deployment.worker.kill()
        for session in (stdio, http):
            refused = await call(session, "echo", {"text": "down"})
            assert refused.is_error and "governance_unavailable" in text(refused), text(refused)
    assert calls("echo") == 2
