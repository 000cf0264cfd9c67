"""The OpenAI Agents SDK adapter on a real worker: a ``Runner`` whose ``Model`` is scripted (the SDK's
``ScriptedModel``, no network) calls a governed function tool."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from agents import Agent, FunctionTool, RunConfig, Runner, function_tool
from agents.exceptions import ToolInputGuardrailTripwireTriggered
from agents.items import ToolCallOutputItem
from agents.result import RunResult
from agents.testing import ScriptedModel, assistant_message, function_call

from schemas import VerdictKind
from sluicegate import Gate
from sluicegate.adapters.openai_agents import OnBlock, SluicegateGuardrails
from tests.adapters.conftest import Deployment
from tests.mcp.conftest import outcomes_of

pytestmark = pytest.mark.integration
NO_TRACING = RunConfig(tracing_disabled=True)


class Refunds:
    """A function tool that notes every refund it actually makes."""

    def __init__(self) -> None:
        self.made: list[tuple[str, float]] = []

    def tool(self) -> FunctionTool:
        @function_tool
        def refund(customer: str, amount: float) -> str:
            """Refund a customer."""
            self.made.append((customer, amount))
            return f"refunded {amount} to {customer}"

        return refund


def agent(
    refunds: Refunds, gate: Gate, calls: list[tuple[str, float]], on_block: OnBlock = "message"
) -> Agent[Any]:
    """An agent whose model asks for ``calls`` (call id = customer) in one turn, then says done."""
    guard = SluicegateGuardrails(gate, on_block=on_block)
    tool = guard.govern(refunds.tool(), name="payments.refund", action="create",
                        target=lambda customer, amount: f"payments:customer/{customer}")
    turn = [function_call("refund", {"customer": c, "amount": a}, call_id=c) for c, a in calls]
    model = ScriptedModel([turn, [assistant_message("done")]])
    return Agent(name="support", instructions="Refund what you are asked to.", model=model, tools=[tool])


def outputs(result: RunResult) -> dict[str, str]:
    """The tool outputs the model got, by call id."""
    found = {}
    for item in result.new_items:
        if isinstance(item, ToolCallOutputItem):
            raw: Any = item.raw_item
            call_id = raw.get("call_id") if isinstance(raw, dict) else getattr(raw, "call_id", None)
            found[str(call_id)] = str(item.output)
    return found


async def test_allow_runs_the_tool_and_records_its_outcome(deployment: Deployment, gate: Gate) -> None:
    refunds = Refunds()
    result = await Runner.run(agent(refunds, gate, [("c1", 40)]), "refund c1", run_config=NO_TRACING)
    assert outputs(result) == {"c1": "refunded 40.0 to c1"}
    assert (refunds.made, result.final_output) == ([("c1", 40.0)], "done")
    await gate.stop()  # flushes the outcome
    (outcome,) = await outcomes_of(deployment.worker.bootstrap, deployment.worker.names.outcomes,
                                   gate.identity.agent_id or "", 1)
    assert (outcome["tool"], outcome["status"]) == ("payments.refund", "success")


async def test_block_is_the_tools_output_and_two_parallel_calls_get_two_decisions(gate: Gate) -> None:
    refunds = Refunds()
    result = await Runner.run(agent(refunds, gate, [("small", 20), ("huge", 9000)]), "refund",
                              run_config=NO_TRACING)
    replies = outputs(result)
    assert replies["small"] == "refunded 20.0 to small"
    assert "refund-blocked: refunds over 1000 are not allowed" in replies["huge"]
    assert refunds.made == [("small", 20.0)]
    decided = [r.output.output_info for r in result.tool_input_guardrail_results]
    assert sorted(d["decision"] for d in decided) == ["ALLOW", "BLOCK"]
    assert len({d["request_id"] for d in decided}) == 2


async def test_block_can_stop_the_run(gate: Gate) -> None:
    refunds = Refunds()
    with pytest.raises(ToolInputGuardrailTripwireTriggered) as stopped:
        await Runner.run(agent(refunds, gate, [("c1", 5000)], on_block="raise"), "refund",
                         run_config=NO_TRACING)
    assert "refund-blocked" in json.dumps(stopped.value.output.output_info)
    assert refunds.made == []


async def test_an_approval_waits_and_the_tool_runs_once_approved(deployment: Deployment, gate: Gate) -> None:
    refunds = Refunds()
    running = asyncio.create_task(Runner.run(agent(refunds, gate, [("c3", 500)]), "refund",
                                             run_config=NO_TRACING))
    (request,) = await deployment.pending(gate.identity.agent_id or "", 1)
    assert not running.done() and refunds.made == []
    await deployment.verdict(request.request_id, VerdictKind.APPROVE)
    result = await asyncio.wait_for(running, 120)
    assert outputs(result) == {"c3": "refunded 500.0 to c3"}
    assert refunds.made == [("c3", 500.0)]
