"""A LangGraph agent whose refund tool runs only when sluicegate allows it.

Run a worker with a policy for ``payments.refund`` first, then::

    SLUICEGATE_AGENT_CREDENTIAL=sga1... python examples/langgraph_refunds.py

The model here is scripted so the example runs without an LLM; put your chat model in its place
(``init_chat_model(...).bind_tools([refund])``). Two refunds are asked for in one turn: each is its own
intent and decision; the large one comes back as a tool error with the policy's reasons.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from sluicegate import Gate, Settings
from sluicegate.adapters.langchain import governed


@tool
async def refund(customer: str, amount: float) -> str:
    """Refund a customer."""
    return f"refunded {amount} to {customer}"


def scripted_model() -> GenericFakeChatModel:
    calls = [{"name": "refund", "args": {"customer": "c1", "amount": 40}, "id": "1", "type": "tool_call"},
             {"name": "refund", "args": {"customer": "c2", "amount": 5000}, "id": "2", "type": "tool_call"}]
    return GenericFakeChatModel(messages=iter([AIMessage(content="", tool_calls=calls),
                                               AIMessage(content="Done.")]))


async def main() -> None:
    async with Gate(Settings()) as gate:
        guarded = governed(refund, gate, name="payments.refund", action="create", on_block="message",
                           target=lambda customer, amount: f"payments:customer/{customer}")
        model = scripted_model()

        async def think(state: MessagesState) -> dict[str, list[Any]]:
            return {"messages": [await model.ainvoke(state["messages"])]}

        builder = StateGraph(MessagesState)
        builder.add_node("model", think)
        builder.add_node("tools", ToolNode([guarded]))
        builder.add_edge(START, "model")
        builder.add_conditional_edges("model", tools_condition)
        builder.add_edge("tools", "model")
        state = await builder.compile().ainvoke({"messages": [HumanMessage("Refund c1 40 and c2 5000.")]})
        for message in state["messages"]:
            print(f"{message.type}: {message.content}")


if __name__ == "__main__":
    asyncio.run(main())
