"""The LangChain adapter on a real worker: a BaseTool invoked directly (Gate and SyncGate) and through a
LangGraph graph whose model is scripted (no network), with parallel tool calls in one turn."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any
from uuid import UUID

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import StructuredTool, ToolException
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command

from schemas import VerdictKind
from sluicegate import Gate, SyncGate
from sluicegate.adapters.langchain import OnApproval, OnBlock, governed
from tests.adapters.conftest import Deployment
from tests.mcp.conftest import outcomes_of
from tests.streams.harness import Client

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


def govern(refunds: Refunds, gate: Gate | SyncGate, on_block: OnBlock = "raise",
           on_approval: OnApproval = "wait") -> Any:
    return governed(refunds.tool(), gate, name="payments.refund", action="create", on_block=on_block,
                    on_approval=on_approval, target=lambda customer, amount: f"payments:customer/{customer}")


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


def graph(refund: Any, turns: list[AIMessage], checkpointer: InMemorySaver | None = None) -> Any:
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
    return builder.compile(checkpointer=checkpointer)


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


@pytest.fixture
async def client(deployment: Deployment) -> Any:
    async with Client(deployment.worker.bootstrap, deployment.worker.prefix) as connected:
        yield connected


async def final_of(client: Client, request_id: str) -> None:
    """Once the workers have sent the request's final decision (they answer from it from then on)."""
    await client.wait_for(lambda: any(d.final for d in client.decisions[UUID(request_id)]),
                           what=f"the final decision of {request_id}")


async def test_an_approval_interrupts_the_graph_and_the_resumed_call_runs_once_approved(
    deployment: Deployment, gate: Gate, client: Client,
) -> None:
    refunds = Refunds()
    turns = [AIMessage(content="", tool_calls=[call("big", 500, "ann")]), AIMessage(content="done")]
    app = graph(govern(refunds, gate, on_approval="interrupt"), turns, InMemorySaver())
    config = {"configurable": {"thread_id": f"thread-{secrets.token_hex(4)}"}}
    state = await app.ainvoke({"messages": [HumanMessage("refund ann")]}, config)
    (paused,) = state["__interrupt__"]
    assert paused.value["sluicegate"] == "approval_pending" and paused.value["tool"] == "payments.refund"
    assert any("refund-review" in reason for reason in paused.value["reasons"])
    assert refunds.made == []
    (request,) = await deployment.pending(gate.identity.agent_id or "", 1)
    assert str(request.request_id) == paused.value["request_id"]

    state = await app.ainvoke(Command(resume="any value"), config)  # before anyone answered
    (again,) = state["__interrupt__"]
    assert again.value["request_id"] == paused.value["request_id"] and refunds.made == []

    await deployment.verdict(request.request_id, VerdictKind.APPROVE)
    await final_of(client, paused.value["request_id"])
    state = await app.ainvoke(Command(resume="approved"), config)
    assert "__interrupt__" not in state
    assert tool_messages(state)["big"].content == "refunded 500.0 to ann"
    assert refunds.made == [("ann", 500.0)]
    mine = [r for r in client.requests.values() if r.intent.agent_id == gate.identity.agent_id]
    assert [str(r.request_id) for r in mine] == [paused.value["request_id"]]  # one approval, not three


async def test_parallel_interrupted_calls_get_their_own_decisions_when_resumed(
    deployment: Deployment, gate: Gate, client: Client,
) -> None:
    """Two calls of one turn wait for approval; one is denied, one approved; however the graph's resume
    values are matched to the calls, each call gets its own request's decision."""
    refunds = Refunds()
    turns = [AIMessage(content="", tool_calls=[call("a", 500, "ann"), call("b", 700, "bob")]),
             AIMessage(content="done")]
    app = graph(govern(refunds, gate, on_block="message", on_approval="interrupt"), turns, InMemorySaver())
    config = {"configurable": {"thread_id": f"thread-{secrets.token_hex(4)}"}}
    state = await app.ainvoke({"messages": [HumanMessage("refund both")]}, config)
    assert state["__interrupt__"] and refunds.made == []
    pending = await deployment.pending(gate.identity.agent_id or "", 2)
    requests = {r.intent.params["customer"]: r for r in pending}
    await deployment.verdict(requests["bob"].request_id, VerdictKind.DENY, "not this one")
    await deployment.verdict(requests["ann"].request_id, VerdictKind.APPROVE)
    for request in requests.values():
        await final_of(client, str(request.request_id))
    state = await app.ainvoke(Command(resume={i.id: "answered" for i in state["__interrupt__"]}), config)
    assert "__interrupt__" not in state
    replies = tool_messages(state)
    assert (replies["a"].status, replies["a"].content) == ("success", "refunded 500.0 to ann")
    assert replies["b"].status == "error" and "ApprovalDenied" in str(replies["b"].content)
    assert refunds.made == [("ann", 500.0)]


async def test_interrupt_mode_outside_a_checkpointed_graph_is_refused(gate: Gate) -> None:
    refunds = Refunds()
    with pytest.raises(ToolException, match="interrupt"):
        await govern(refunds, gate, on_approval="interrupt").ainvoke({"customer": "c1", "amount": 40})
    assert refunds.made == []
