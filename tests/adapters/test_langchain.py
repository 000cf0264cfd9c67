"""The LangChain adapter on a real worker: a BaseTool invoked directly (Gate and SyncGate) and through a
LangGraph graph whose model is scripted (no network), with parallel tool calls in one turn."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import StructuredTool, ToolException
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from schemas import VerdictKind
from sluicegate import Gate, SyncGate
from sluicegate.adapters.langchain import OnBlock, governed
from tests.adapters.conftest import Deployment
from tests.mcp.conftest import outcomes_of

pytestmark = pytest.mark.integration


class Refunds:
    """A refund tool (sync and async) that notes every refund it actually makes."""

    def __init__(self) -> None:
        self.made: list[tuple[str, float]] = []

    def refund(self, customer: str, amount: float) -> str:
        self.made.append((customer, amount))
        return f"refunded {amount} to {customer}"

    async def arefund(self, customer: str, amount: float) -> str:
        return self.refund(customer, amount)

    def tool(self) -> StructuredTool:
        return StructuredTool.from_function(func=self.refund, coroutine=self.arefund, name="refund",
                                            description="Refund a customer.")


def govern(refunds: Refunds, gate: Gate | SyncGate, on_block: OnBlock = "raise") -> Any:
    return governed(refunds.tool(), gate, name="payments.refund", action="create", on_block=on_block,
                    target=lambda customer, amount: f"payments:customer/{customer}")


def call(call_id: str, amount: float, customer: str = "c1") -> dict[str, Any]:
    return {"name": "refund", "args": {"customer": customer, "amount": amount}, "id": call_id,
            "type": "tool_call"}


async def test_allow_runs_block_raises_the_tool_error_with_the_reasons(
    deployment: Deployment, gate: Gate
) -> None:
    refunds = Refunds()
    refund = govern(refunds, gate)
    assert await refund.ainvoke({"customer": "c1", "amount": 40}) == "refunded 40.0 to c1"
    with pytest.raises(ToolException, match=r"refund-blocked: refunds over 1000 are not allowed") as refused:
        await refund.ainvoke({"customer": "c1", "amount": 5000})
    assert "ActionBlocked" in str(refused.value)
    assert refunds.made == [("c1", 40.0)]
    await gate.stop()  # flushes the outcome of the refund that ran (the refused one has none)
    (outcome,) = await outcomes_of(deployment.worker.bootstrap, deployment.worker.names.outcomes,
                                   gate.identity.agent_id or "", 1)
    assert (outcome["tool"], outcome["status"]) == ("payments.refund", "success")


async def test_block_as_the_tools_message(gate: Gate) -> None:
    refunds = Refunds()
    message = await govern(refunds, gate, on_block="message").ainvoke(call("c9", 5000))
    assert isinstance(message, ToolMessage)
    assert (message.status, message.tool_call_id) == ("error", "c9")
    assert "refund-blocked: refunds over 1000 are not allowed" in str(message.content)
    assert refunds.made == []


def test_invoke_with_a_sync_gate(deployment: Deployment) -> None:
    refunds = Refunds()
    with SyncGate(deployment.settings(), credential=deployment.credential()) as gate:
        refund = govern(refunds, gate)
        assert refund.invoke({"customer": "c2", "amount": 10}) == "refunded 10.0 to c2"
        with pytest.raises(ToolException, match="refund-blocked"):
            refund.invoke({"customer": "c2", "amount": 2000})
    assert refunds.made == [("c2", 10.0)]


async def test_an_approval_waits_and_the_tool_runs_once_approved(deployment: Deployment, gate: Gate) -> None:
    refunds = Refunds()
    waiting = asyncio.create_task(govern(refunds, gate).ainvoke({"customer": "c3", "amount": 500}))
    (request,) = await deployment.pending(gate.identity.agent_id or "", 1)
    assert not waiting.done() and refunds.made == []
    await deployment.verdict(request.request_id, VerdictKind.APPROVE)
    assert await asyncio.wait_for(waiting, 120) == "refunded 500.0 to c3"


def graph(refund: Any, turns: list[AIMessage]) -> Any:
    """model -> tools -> model ... with a scripted model: each turn is the next scripted message."""
    model = GenericFakeChatModel(messages=iter(turns))

    async def think(state: MessagesState) -> dict[str, list[Any]]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", think)
    builder.add_node("tools", ToolNode([refund]))
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", tools_condition)
    builder.add_edge("tools", "model")
    return builder.compile()


def tool_messages(state: dict[str, Any]) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in state["messages"] if isinstance(m, ToolMessage)}


async def test_a_langgraph_turn_with_two_parallel_calls_gets_two_decisions(gate: Gate) -> None:
    refunds = Refunds()
    turns = [AIMessage(content="", tool_calls=[call("small", 30), call("huge", 9000)]),
             AIMessage(content="done")]
    state = await graph(govern(refunds, gate, on_block="message"), turns).ainvoke(
        {"messages": [HumanMessage("refund both")]})
    replies = tool_messages(state)
    assert (replies["small"].status, replies["small"].content) == ("success", "refunded 30.0 to c1")
    assert replies["huge"].status == "error" and "refund-blocked" in str(replies["huge"].content)
    assert refunds.made == [("c1", 30.0)]
    assert state["messages"][-1].content == "done"


async def test_parallel_approvals_are_neither_lost_nor_crossed(deployment: Deployment, gate: Gate) -> None:
    """Two calls wait for approval at once; the one approved runs, the one denied does not."""
    refunds = Refunds()
    turns = [AIMessage(content="", tool_calls=[call("a", 500, "ann"), call("b", 700, "bob")]),
             AIMessage(content="done")]
    running = asyncio.create_task(graph(govern(refunds, gate, on_block="message"), turns).ainvoke(
        {"messages": [HumanMessage("refund both")]}))
    pending = await deployment.pending(gate.identity.agent_id or "", 2)
    requests = {r.intent.params["customer"]: r for r in pending}
    await deployment.verdict(requests["bob"].request_id, VerdictKind.DENY, "not this one")
    await deployment.verdict(requests["ann"].request_id, VerdictKind.APPROVE)
    replies = tool_messages(await asyncio.wait_for(running, 120))
    assert (replies["a"].status, replies["a"].content) == ("success", "refunded 500.0 to ann")
    assert replies["b"].status == "error" and "ApprovalDenied" in str(replies["b"].content)
    assert str(requests["bob"].request_id) in str(replies["b"].content)
    assert refunds.made == [("ann", 500.0)]
