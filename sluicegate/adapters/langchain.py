"""LangChain and LangGraph: any ``BaseTool`` that runs only when sluicegate allows the call.

```python
async with Gate(settings) as gate:                 # SLUICEGATE_AGENT_CREDENTIAL: the agent's identity
    refund = governed(refund_tool, gate, tool="payments.refund", action="create",
                      target=lambda customer, amount: f"payments:customer/{customer}")
    graph = create_react_agent(model, [refund])    # or ToolNode([refund]) in your own graph
```

Each call is one intent (``params`` = the call's arguments unless a function says otherwise) and one
decision, also when a model asks for several tools in one turn (LangGraph runs them concurrently). ALLOW
runs the wrapped tool and records its outcome; REQUIRE_APPROVAL waits for the final decision; anything
else raises LangChain's ``ToolException`` with the decision's determining reasons. ``on_block="message"``
sets the tool's ``handle_tool_error`` instead, so the refusal comes back as the tool's message (status
``error``) and the model can read why and adapt. An async ``Gate`` serves ``ainvoke`` (what LangGraph
uses); a ``SyncGate`` serves ``invoke`` as well.

``on_approval="interrupt"`` pauses a LangGraph graph instead of waiting: a call that needs approval ends
the run with an interrupt (its value names the request, the tool and why; the graph's checkpoint keeps
the rest) and the tool does not run. Resume the graph (``Command(resume=...)``, any value) when the
reviewers have answered: the call asks again under the same request id, derived from the thread, the
task and the tool call, and the workers answer it from the decision they recorded (no second approval
request). Approved, the tool runs; denied or expired, it is refused as usual; still pending, the graph
is interrupted again. The decision is looked up, never carried in the resume value, so parallel calls
resumed in any order get their own decisions.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, Literal
from uuid import UUID, uuid5

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.tools import BaseTool, ToolException
from langgraph.config import get_config
from langgraph.types import interrupt

from schemas import Action, Intent
from schemas.decision import APPROVAL_DENIED, APPROVAL_EXPIRED
from sluicegate.adapters.refusal import determining_reasons, refusal_text
from sluicegate.errors import ActionBlocked
from sluicegate.gate import Gate
from sluicegate.guard import AsyncGuard, Authorization, BlockingGuard, GuardSpec, TargetSpec
from sluicegate.sync import SyncGate

OnBlock = Literal["raise", "message"]
OnApproval = Literal["wait", "interrupt"]

_TOOL_CALL_ID: ContextVar[str | None] = ContextVar("sluicegate_tool_call_id", default=None)
_CALL_NAMESPACE = UUID("5d0f4b52-3c1e-4f7e-9a59-6b1f0c2a8e71")
"""Namespace of the request ids derived from a LangGraph tool call (uuid5)."""


class GovernedTool(BaseTool):
    """A tool that asks sluicegate before its wrapped tool runs (build it with :func:`governed`)."""

    wrapped: BaseTool
    run_async: Callable[..., Awaitable[Any]]
    run_blocking: Callable[..., Any] | None = None

    def run(self, tool_input: Any, *args: Any, tool_call_id: str | None = None, **kwargs: Any) -> Any:
        token = _TOOL_CALL_ID.set(tool_call_id)  # the call's id, for on_approval="interrupt"
        try:
            return super().run(tool_input, *args, tool_call_id=tool_call_id, **kwargs)
        finally:
            _TOOL_CALL_ID.reset(token)

    async def arun(self, tool_input: Any, *args: Any, tool_call_id: str | None = None, **kwargs: Any) -> Any:
        token = _TOOL_CALL_ID.set(tool_call_id)
        try:
            return await super().arun(tool_input, *args, tool_call_id=tool_call_id, **kwargs)
        finally:
            _TOOL_CALL_ID.reset(token)

    def _run(self, run_manager: CallbackManagerForToolRun | None = None, **arguments: Any) -> Any:
        if self.run_blocking is None:
            raise ToolException(f"{self.name}: invoke needs a SyncGate; with a Gate, use ainvoke")
        callbacks = run_manager.get_child() if run_manager is not None else None
        try:
            return self.run_blocking(_callbacks=callbacks, **arguments)
        except ActionBlocked as exc:
            raise ToolException(refusal_text(exc)) from exc

    async def _arun(self, run_manager: AsyncCallbackManagerForToolRun | None = None, **arguments: Any) -> Any:
        callbacks = run_manager.get_child() if run_manager is not None else None
        try:
            return await self.run_async(_callbacks=callbacks, **arguments)
        except ActionBlocked as exc:
            raise ToolException(refusal_text(exc)) from exc


def governed(
    tool: BaseTool,
    gate: Gate | SyncGate,
    *,
    action: Action | str,
    target: TargetSpec,
    name: str | None = None,
    params: Callable[..., Mapping[str, Any]] | None = None,
    fail_open: bool = False,
    on_block: OnBlock = "raise",
    on_approval: OnApproval = "wait",
) -> GovernedTool:
    """``tool`` behind ``gate``: the intent's tool is ``name`` (default: the tool's name), ``target`` a
    string or a function of the call's arguments, ``params`` the arguments unless a function gives them.
    ``on_block``: ``raise`` the ToolException, or return it as the tool's ``message``. ``on_approval``:
    ``wait`` for the reviewers, or ``interrupt`` the LangGraph graph until it is resumed."""

    async def run_async(_callbacks: Any = None, **arguments: Any) -> Any:
        return await tool.ainvoke(arguments, config={"callbacks": _callbacks})

    def run_blocking(_callbacks: Any = None, **arguments: Any) -> Any:
        return tool.invoke(arguments, config={"callbacks": _callbacks})

    guard = gate.guard(tool=name or tool.name, action=action, fail_open=fail_open,
                       target=_without_callbacks(target) if callable(target) else target,
                       params=_without_callbacks(params or _arguments))
    if on_approval == "interrupt":
        guard = _interrupting(guard, gate)
    return GovernedTool(
        name=tool.name, description=tool.description, args_schema=tool.args_schema,
        return_direct=tool.return_direct, response_format=tool.response_format,
        handle_tool_error=on_block == "message", wrapped=tool, run_async=guard(run_async),
        run_blocking=guard(run_blocking) if isinstance(gate, SyncGate) else None,
    )


def _interrupting(guard: AsyncGuard | BlockingGuard, gate: Gate | SyncGate) -> AsyncGuard | BlockingGuard:
    """``guard`` with each call under its LangGraph call's request id, interrupting the graph while the
    call's approval is pending."""
    binding = guard.binding

    def make_intent(spec: GuardSpec, target: str, params: dict[str, Any]) -> Intent:
        intent = binding.make_intent(spec, target, params)
        return intent.model_copy(update={"request_id": call_request_id(intent.agent_id)})

    async def authorize(intent: Intent) -> Authorization:
        while True:
            if isinstance(gate, SyncGate):  # blocking on the gate's own thread
                auth = await asyncio.to_thread(gate.authorize, intent, until_pending=True)
            else:
                auth = await gate.authorize(intent, until_pending=True)
            if auth.decision.final:
                return _reviewed(auth)
            _interrupt(auth)

    def authorize_blocking(intent: Intent) -> Authorization:
        assert isinstance(gate, SyncGate)
        while True:
            auth = gate.authorize(intent, until_pending=True)
            if auth.decision.final:
                return _reviewed(auth)
            _interrupt(auth)

    bound = dataclasses.replace(binding, make_intent=make_intent, authorize=authorize,
                                authorize_blocking=authorize_blocking if binding.authorize_blocking else None)
    return type(guard)(bound, guard.spec)


def call_request_id(agent_id: str) -> UUID:
    """The request id of the running LangGraph tool call: the same each time the graph runs the call
    (thread, task and tool call id), so a resumed call is the request its approval was opened for."""
    try:
        configurable = get_config().get("configurable", {})
    except RuntimeError as exc:
        raise ToolException('on_approval="interrupt" needs the tool to run in a LangGraph graph') from exc
    thread, call = configurable.get("thread_id"), _TOOL_CALL_ID.get()
    if thread is None or call is None:
        raise ToolException('on_approval="interrupt" needs a graph with a checkpointer (a thread_id) '
                            "and a tool call (its id)")
    task = str(configurable.get("checkpoint_ns", ""))
    return uuid5(_CALL_NAMESPACE, "\x1f".join((agent_id, str(thread), task, call)))


def _interrupt(auth: Authorization) -> None:
    """Pause the graph on a pending approval (returns only when the graph was resumed)."""
    decision, intent = auth.decision, auth.intent
    deadline = decision.approval_deadline_at
    interrupt({"sluicegate": "approval_pending", "request_id": str(decision.request_id),
               "agent_id": intent.agent_id, "tool": intent.tool, "target": intent.target,
               "reasons": list(determining_reasons(decision)),
               "approval_deadline_at": deadline.isoformat() if deadline else None})


def _reviewed(auth: Authorization) -> Authorization:
    """A final decision reached through reviewers (denied or expired) read as such, also when this run
    saw only the final (the approval was pending in an earlier run of the graph)."""
    if auth.pending is None and {APPROVAL_DENIED, APPROVAL_EXPIRED} & set(auth.decision.determining):
        return dataclasses.replace(auth, pending=auth.decision)
    return auth


def _arguments(**arguments: Any) -> Mapping[str, Any]:
    return arguments


def _without_callbacks(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` over the call's arguments only (the guard also passes the run's callbacks along)."""
    def call(_callbacks: Any = None, **arguments: Any) -> Any:
        return fn(**arguments)
    return call
