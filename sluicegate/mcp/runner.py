"""``sluicegate mcp proxy`` as a function: load the mapping and policy, start the gate, connect upstream,
serve downstream until the agent (stdio) or the process (HTTP) goes away."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sluicegate.gate import Gate
from sluicegate.mcp.mapping import ToolMapper, load_mapping
from sluicegate.mcp.proxy import DEFAULT_PROGRESS_INTERVAL_S, GovernedProxy
from sluicegate.mcp.transports import Upstream, connect, parse_listen, serve_http, serve_stdio
from sluicegate.settings import Settings
from streams.engine.compiler import CompiledPolicy, load_policy

SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEFAULT_APPROVAL_WAIT_S = 900.0


@dataclass(frozen=True)
class ProxyOptions:
    """Everything the command line says about one proxy."""

    server: str
    upstream: Upstream
    listen: str | None = None
    mapping: Path | None = None
    policy: Path | None = None
    list_blocked: bool = False
    approval_wait_s: float = DEFAULT_APPROVAL_WAIT_S
    progress_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S
    agent_id: str | None = None
    agent_role: str | None = None
    environment: str | None = None

    def __post_init__(self) -> None:
        if not SERVER_NAME.match(self.server):
            raise ValueError(f"--server {self.server!r}: letters, digits, '_', '.', '-' (it prefixes tools)")
        if self.listen is not None:
            parse_listen(self.listen)


async def run_proxy(options: ProxyOptions, settings: Settings) -> None:
    """Run the proxy until its downstream closes (stdio) or it is cancelled (HTTP).

    Raises MappingError or PolicyError (from the files) and InvalidCredential (no credential, trust on)
    before anything connects.
    """
    mapper = ToolMapper(options.server, load_mapping(options.mapping) if options.mapping else None)
    policy: CompiledPolicy | None = load_policy(options.policy) if options.policy else None
    gate = Gate(settings, agent_id=options.agent_id, agent_role=options.agent_role,
                environment=options.environment, max_approval_wait_s=options.approval_wait_s)
    async with gate, connect(options.upstream) as (session, info):
        proxy = GovernedProxy(gate, session, info, mapper, policy=policy, list_blocked=options.list_blocked,
                              progress_interval_s=options.progress_interval_s)
        server = proxy.server()
        if options.listen is None:
            await serve_stdio(server)
        else:
            host, port = parse_listen(options.listen)
            await serve_http(server, host, port)
