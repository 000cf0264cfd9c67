"""Real processes for the proxy's tests: one worker (trust on) per module, the test MCP server
(``tests/mcp/server.py``) behind a ``sluicegate mcp proxy`` subprocess, the ``mcp`` SDK's client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from infra.kafka.process import free_port
from sluicegate.trust import AgentCredential, SignerCredential
from streams.policy_source import publish_policy
from tests.approvals.factories import WorkerKeys
from tests.streams.harness import ROOT, WorkerProcess

KEYS = WorkerKeys()
"""The deployment's keys: the worker runs with trust on, the proxies hold agent credentials."""
SERVER = ROOT / "tests" / "mcp" / "server.py"
REVIEWER = "olga"
REVIEWERS = f"groups:\n  ops: [{REVIEWER}]\n"
POLICY = """
policy: mcp_proxy
default: BLOCK
rules:
  - {id: reads-ok, match: {tool: "demo.*", action: read}, decision: ALLOW}
  - {id: counts-ok, match: {tool: demo.count}, decision: ALLOW}
  - {id: no-wipes, match: {tool: demo.wipe}, decision: BLOCK, description: "wiping is never allowed"}
  - id: small-refunds
    match: {tool: demo.refund}
    when: {field: params.amount, op: lte, value: 100}
    decision: ALLOW
  - id: large-refunds
    match: {tool: demo.refund}
    when: {field: params.amount, op: gt, value: 100}
    decision: BLOCK
    description: "refunds over 100 need a human"
  - id: deploy-review
    match: {tool: demo.deploy}
    decision: REQUIRE_APPROVAL
    approval: {group: ops, timeout: 10m}
limits:
  - {id: fifty-counts, match: {tool: demo.count}, key: agent, window: 1h, count: 50, decision: BLOCK}
"""
START_TIMEOUT_S = 120.0


@dataclass
class Deployment:
    """The module's worker, the policy file the proxies list tools with, and where calls are counted."""

    worker: WorkerProcess
    policy_file: Path
    workdir: Path

    def agent(self, tag: str) -> AgentCredential:
        return AgentCredential.issue(KEYS.ring, f"{tag}-{secrets.token_hex(4)}", "assistant", "production")

    def env(self, credential: AgentCredential, calls: Path, decision_timeout_s: float = 60.0,
            ) -> dict[str, str]:
        """The proxy's environment: the broker, the agent's credential, where the server counts calls."""
        base = {k: v for k, v in os.environ.items() if k != "SLUICEGATE_TRUST_OFF"}
        return {**base, "PYTHONUNBUFFERED": "1", "KAFKA_BOOTSTRAP_SERVERS": self.worker.bootstrap,
                "SLUICEGATE_TOPIC_PREFIX": self.worker.prefix, "SLUICEGATE_AGENT_CREDENTIAL": str(credential),
                "SLUICEGATE_DECISION_TIMEOUT_S": str(decision_timeout_s), "MCP_TEST_CALLS": str(calls)}

    def reviewer_env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if k != "SLUICEGATE_TRUST_OFF"}
        reviewer = SignerCredential.issue(KEYS.ring, "reviewer", REVIEWER)
        return {**base, "KAFKA_BOOTSTRAP_SERVERS": self.worker.bootstrap,
                "SLUICEGATE_TOPIC_PREFIX": self.worker.prefix, "SLUICEGATE_TRUST_PUBLIC_KEY": KEYS.public,
                "SLUICEGATE_REVIEWER_CREDENTIAL": str(reviewer)}


@dataclass
class Calls:
    """The tool calls that reached the server (one line per call in a file the server appends to)."""

    path: Path

    def __call__(self, tool: str | None = None) -> int:
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        return sum(1 for line in lines if tool in (None, line))


@pytest.fixture(scope="module")
def deployment(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("mcp")
    reviewers = workdir / "reviewers.yaml"
    reviewers.write_text(REVIEWERS)
    policy_file = workdir / "policy.yaml"
    policy_file.write_text(POLICY)
    trust = {"SLUICEGATE_TRUST_KEYS": str(KEYS.ring), "SLUICEGATE_TRUST_SIGNING_KEY": str(KEYS.signer)}
    worker = WorkerProcess(kafka_bootstrap, "mcp" + secrets.token_hex(5), workdir, reviewers=reviewers,
                           trust=trust)
    publisher = SignerCredential.issue(KEYS.ring, "publisher", "policy-team")
    asyncio.run(publish_policy(kafka_bootstrap, worker.names.policies, POLICY, "policy.yaml", publisher))
    with worker.running():
        yield Deployment(worker, policy_file, workdir)


@pytest.fixture
def calls(tmp_path: Path) -> Calls:
    return Calls(tmp_path / "calls.txt")


def proxy_argv(deployment: Deployment, *options: str) -> list[str]:
    return [sys.executable, "-m", "sluicegate.cli", "mcp", "proxy", "--server", "demo",
            "--policy", str(deployment.policy_file), "--progress-interval", "0.5", *options]


@contextlib.asynccontextmanager
async def stdio_proxy(env: dict[str, str], argv: list[str], log: Path) -> AsyncIterator[ClientSession]:
    """A client session with a proxy the client spawns over stdio, in front of the server over stdio
    (their stderr goes to ``log``)."""
    command, *args = [*argv, "--", sys.executable, str(SERVER)]
    parameters = StdioServerParameters(command=command, args=args, env=env, cwd=ROOT)
    with log.open("a") as errlog:
        async with stdio_client(parameters, errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


@dataclass
class Processes:
    """Subprocesses a test started, stopped at the end (by pid, through their Popen objects)."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
        self.started.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(30)


async def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until something accepts connections on 127.0.0.1:port; fails if ``proc`` exits first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"nothing listens on {port}\n{log.read_text(errors='replace')[-3000:]}")


@contextlib.asynccontextmanager
async def http_proxy(env: dict[str, str], argv: list[str], workdir: Path) -> AsyncIterator[ClientSession]:
    """A client session over streamable HTTP with a proxy listening on HTTP, in front of the server
    serving streamable HTTP."""
    processes = Processes()
    server_port, proxy_port = free_port(), free_port()
    try:
        server = processes.start([sys.executable, str(SERVER), "--http", str(server_port)], env,
                                 workdir / "server.log")
        await wait_listening(server_port, server, workdir / "server.log")
        proxy = processes.start([*argv, "--upstream", f"http://127.0.0.1:{server_port}/mcp",
                                 "--listen", f"127.0.0.1:{proxy_port}"], env, workdir / "proxy.log")
        await wait_listening(proxy_port, proxy, workdir / "proxy.log")
        async with (streamable_http_client(f"http://127.0.0.1:{proxy_port}/mcp") as (read, write),
                    ClientSession(read, write) as session):
            await session.initialize()
            yield session
    finally:
        processes.stop()


async def outcomes_of(bootstrap: str, topic: str, agent_id: str, count: int,
                      timeout_s: float = 60.0) -> list[dict[str, object]]:
    """The first ``count`` execution outcomes ``agent_id`` recorded, read from the beginning."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    found: list[dict[str, object]] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(found) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found += [json.loads(r.value or b"{}") for r in records if r.key == agent_id.encode()]
    finally:
        await consumer.stop()
    return found
