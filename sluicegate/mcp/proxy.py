"""The governing MCP proxy: an MCP server to the agent, a client of the real server, a ``Gate`` between.

Every ``tools/call`` becomes an intent (:mod:`sluicegate.mcp.mapping`) and is forwarded only on ALLOW
(or, for a tool the mapping marks ``fail_open``, when governance is unavailable: audited). Anything else
returns an MCP tool error whose text is the decision's determining reasons, so the model can read why.
While a decision is outstanding (an approval), progress notifications are sent every
``progress_interval_s``. ``tools/list`` hides the tools the policy BLOCKs for every call
(:mod:`sluicegate.mcp.listing`) unless ``list_blocked``. Resources and prompts pass through, or are
decided too when the mapping says so. Outcomes are recorded as the SDK's guard records them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import mcp_types as types
from mcp.client.session import ClientSession
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.shared.exceptions import MCPError

from schemas import Intent, OutcomeStatus
from sluicegate.errors import InvalidIntent
from sluicegate.gate import Gate
from sluicegate.guard import MAX_ERROR_CHARS, Authorization
from sluicegate.mcp.listing import always_blocked
from sluicegate.mcp.mapping import IntentFields, ToolMapper
from sluicegate.mcp.results import blocked_text, error_result
from streams.engine.compiler import CompiledPolicy

log = logging.getLogger(__name__)

DEFAULT_PROGRESS_INTERVAL_S = 5.0
BLOCKED_CODE = -32001
"""The JSON-RPC error code of a governed resource read or prompt that was not allowed."""

Context = ServerRequestContext[Any, Any]


class GovernedProxy:
    """Builds the downstream MCP server over an initialized upstream session."""

    def __init__(
        self,
        gate: Gate,
        upstream: ClientSession,
        upstream_info: types.InitializeResult,
        mapper: ToolMapper,
        *,
        policy: CompiledPolicy | None = None,
        list_blocked: bool = False,
        progress_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S,
    ) -> None:
        self.gate = gate
        self.upstream = upstream
        self.upstream_info = upstream_info
        self.mapper = mapper
        self.policy = policy
        self.list_blocked = list_blocked
        self.progress_interval_s = progress_interval_s
        self.tools: dict[str, types.Tool] = {}

    def server(self) -> Server[Any]:
        """The downstream server: tools always; resources and prompts when the upstream has them."""
        capabilities = self.upstream_info.capabilities
        handlers: dict[str, Any] = {"on_list_tools": self.list_tools, "on_call_tool": self.call_tool}
        if capabilities.resources is not None:
            handlers.update(on_list_resources=self.list_resources, on_read_resource=self.read_resource,
                            on_list_resource_templates=self.list_resource_templates)
        if capabilities.prompts is not None:
            handlers.update(on_list_prompts=self.list_prompts, on_get_prompt=self.get_prompt)
        info = self.upstream_info.server_info
        return Server(f"sluicegate:{self.mapper.server}", version=info.version if info else "",
                      instructions=self.upstream_info.instructions, **handlers)

    # -- tools -----------------------------------------------------------------------------------

    async def list_tools(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        listed = await self.upstream.list_tools(params=params)
        self.tools.update({tool.name: tool for tool in listed.tools})
        if self.policy is None or self.list_blocked:
            return listed
        kept = [tool for tool in listed.tools if not self.hidden(tool)]
        return listed.model_copy(update={"tools": kept})

    async def refresh_tools(self) -> None:
        """Read every page of the upstream's tools (their annotations give the calls' actions)."""
        cursor: str | None = None
        while True:
            page = await self.upstream.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
            self.tools.update({tool.name: tool for tool in page.tools})
            cursor = page.next_cursor
            if not cursor:
                return

    def hidden(self, tool: types.Tool) -> bool:
        """Whether the policy BLOCKs every call of ``tool`` by this proxy's agent."""
        assert self.policy is not None
        try:
            agent = self.gate.identity.required()
        except InvalidIntent:
            return False
        blocked_by = always_blocked(self.policy, f"{self.mapper.server}.{tool.name}",
                                    self.mapper.action(tool.name, tool.annotations),
                                    self.mapper.static_target(tool.name), agent)
        if blocked_by:
            log.info("tools/list: %s hidden (BLOCKed by %s for every call)", tool.name, ", ".join(blocked_by))
        return bool(blocked_by)

    async def call_tool(self, ctx: Context, params: types.CallToolRequestParams) -> types.CallToolResult:
        name, arguments = params.name, params.arguments
        if name not in self.tools:
            await self.refresh_tools()
        known = self.tools.get(name)
        try:
            fields = self.mapper.tool_call(name, known.annotations if known else None, arguments)
        except InvalidIntent as exc:
            return error_result(f"sluicegate: {exc}")
        decided = await self.decide(ctx, fields)
        if isinstance(decided, str):
            return error_result(decided)
        auth, fail_open = decided
        started = time.perf_counter()
        try:
            result = await self.upstream.call_tool(name, arguments)
        except Exception as exc:
            self.record(auth, OutcomeStatus.ERROR, f"{type(exc).__name__}: {exc}", started, fail_open)
            raise
        if not isinstance(result, types.CallToolResult):
            self.record(auth, OutcomeStatus.ERROR, f"unexpected result {type(result).__name__}", started,
                        fail_open)
            return error_result(f"the server answered {name!r} with a {type(result).__name__}")
        error = _text_of(result) if result.is_error else None
        self.record(auth, OutcomeStatus.ERROR if result.is_error else OutcomeStatus.SUCCESS, error, started,
                    fail_open)
        return result

    # -- resources and prompts -------------------------------------------------------------------

    async def list_resources(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return await self.upstream.list_resources(params=params)

    async def list_resource_templates(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return await self.upstream.list_resource_templates(params=params)

    async def read_resource(
        self, ctx: Context, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        if not self.mapper.mapping.resources:
            return await self.upstream.read_resource(uri)
        auth, fail_open = await self.decide_or_raise(ctx, self.mapper.resource_read(uri))
        read: types.ReadResourceResult = await self.recorded(
            auth, fail_open, self.upstream.read_resource(uri))
        return read

    async def list_prompts(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return await self.upstream.list_prompts(params=params)

    async def get_prompt(self, ctx: Context, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        if not self.mapper.mapping.prompts:
            return await self.upstream.get_prompt(params.name, params.arguments)
        fields = self.mapper.prompt_get(params.name, params.arguments)
        auth, fail_open = await self.decide_or_raise(ctx, fields)
        prompt: types.GetPromptResult = await self.recorded(
            auth, fail_open, self.upstream.get_prompt(params.name, params.arguments))
        return prompt

    # -- deciding ----------------------------------------------------------------------------------

    async def decide(self, ctx: Context, fields: IntentFields) -> tuple[Authorization, bool] | str:
        """(authorization, runs fail-open) when the call may go to the server, else the error text."""
        try:
            intent = self.gate.intent(tool=fields.tool, action=fields.action, target=fields.target,
                                      params=fields.params)
        except InvalidIntent as exc:
            return f"sluicegate: {exc}"
        auth = await self.authorize(ctx, intent)
        if auth.allowed:
            return auth, False
        if fields.fail_open and auth.may_fail_open:
            self.gate.record_fail_open(auth)
            return auth, True
        return blocked_text(auth)

    async def decide_or_raise(self, ctx: Context, fields: IntentFields) -> tuple[Authorization, bool]:
        decided = await self.decide(ctx, fields)
        if isinstance(decided, str):
            raise MCPError(BLOCKED_CODE, decided)
        return decided

    async def authorize(self, ctx: Context, intent: Intent) -> Authorization:
        """The gate's authorization, with a progress notification every interval while it waits."""
        task = asyncio.ensure_future(self.gate.authorize(intent))
        try:
            sent = 0
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.progress_interval_s)
                if done:
                    return task.result()
                sent += 1
                message = (f"sluicegate: waiting for the decision on {intent.tool} (request "
                           f"{intent.request_id}); it may need an approval (sluicegate approvals list)")
                await ctx.session.report_progress(sent, None, message)
        finally:
            if not task.done():
                task.cancel()

    async def recorded(self, auth: Authorization, fail_open: bool, call: Any) -> Any:
        started = time.perf_counter()
        try:
            result = await call
        except Exception as exc:
            self.record(auth, OutcomeStatus.ERROR, f"{type(exc).__name__}: {exc}", started, fail_open)
            raise
        self.record(auth, OutcomeStatus.SUCCESS, None, started, fail_open)
        return result

    def record(self, auth: Authorization, status: OutcomeStatus, error: str | None, started: float,
               fail_open: bool) -> None:
        duration_ms = max(0.0, (time.perf_counter() - started) * 1000.0)
        text = error[:MAX_ERROR_CHARS] if error else None
        self.gate.record_outcome(auth, status, text, duration_ms, fail_open)


def _text_of(result: types.CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, types.TextContent)) or "error"
