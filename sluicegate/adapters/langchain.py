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
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.tools import BaseTool, ToolException

from schemas import Action
from sluicegate.adapters.refusal import refusal_text
from sluicegate.errors import ActionBlocked
from sluicegate.gate import Gate
from sluicegate.guard import TargetSpec
from sluicegate.sync import SyncGate

OnBlock = Literal["raise", "message"]


class GovernedTool(BaseTool):
    """A tool that asks sluicegate before its wrapped tool runs (build it with :func:`governed`)."""

    wrapped: BaseTool
    run_async: Callable[..., Awaitable[Any]]
    run_blocking: Callable[..., Any] | None = None

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
) -> GovernedTool:
    """``tool`` behind ``gate``: the intent's tool is ``name`` (default: the tool's name), ``target`` a
    string or a function of the call's arguments, ``params`` the arguments unless a function gives them.
    ``on_block``: ``raise`` the ToolException, or return it as the tool's ``message``."""

    async def run_async(_callbacks: Any = None, **arguments: Any) -> Any:
        return await tool.ainvoke(arguments, config={"callbacks": _callbacks})

    def run_blocking(_callbacks: Any = None, **arguments: Any) -> Any:
        return tool.invoke(arguments, config={"callbacks": _callbacks})

    guard = gate.guard(tool=name or tool.name, action=action, fail_open=fail_open,
                       target=_without_callbacks(target) if callable(target) else target,
                       params=_without_callbacks(params or _arguments))
    return GovernedTool(
        name=tool.name, description=tool.description, args_schema=tool.args_schema,
        return_direct=tool.return_direct, response_format=tool.response_format,
        handle_tool_error=on_block == "message", wrapped=tool, run_async=guard(run_async),
        run_blocking=guard(run_blocking) if isinstance(gate, SyncGate) else None,
    )


def _arguments(**arguments: Any) -> Mapping[str, Any]:
    return arguments


def _without_callbacks(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` over the call's arguments only (the guard also passes the run's callbacks along)."""
    def call(_callbacks: Any = None, **arguments: Any) -> Any:
        return fn(**arguments)
    return call
