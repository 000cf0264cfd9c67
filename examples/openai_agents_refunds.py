"""An OpenAI Agents SDK agent whose refund tool runs only when sluicegate allows it.

Run a worker with a policy for ``payments.refund`` first, then::

    SLUICEGATE_AGENT_CREDENTIAL=sga1... python examples/openai_agents_refunds.py

The model here is the SDK's ``ScriptedModel`` so the example runs without an API key; drop ``model=`` to
use OpenAI's. A refused call comes back to the model as the tool's output, with the policy's reasons.
"""

from __future__ import annotations

import asyncio

from agents import Agent, RunConfig, Runner, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call

from sluicegate import Gate, Settings
from sluicegate.adapters.openai_agents import SluicegateGuardrails


@function_tool
def refund(customer: str, amount: float) -> str:
    """Refund a customer."""
    return f"refunded {amount} to {customer}"


async def main() -> None:
    async with Gate(Settings()) as gate:
        guard = SluicegateGuardrails(gate)  # on_block="raise" stops the run instead
        tool = guard.govern(refund, name="payments.refund", action="create",
                            target=lambda customer, amount: f"payments:customer/{customer}")
        model = ScriptedModel([[function_call("refund", {"customer": "c1", "amount": 40}, call_id="1")],
                               [assistant_message("Done.")]])
        agent = Agent(name="support", instructions="Refund what you are asked to.", model=model, tools=[tool])
        result = await Runner.run(agent, "Refund c1 40.", run_config=RunConfig(tracing_disabled=True))
        for item in result.new_items:
            print(item.type, getattr(item, "output", ""))
        print(result.final_output)


if __name__ == "__main__":
    asyncio.run(main())
