"""The chaos fleet's agents (bench/chaos_fleet.py): each makes one call at a time. A fleet that fired
calls on a clock regardless of the answers piled thousands of calls on the SDK while a fault held the
answers back, and the run measured the pile-up instead of the fault (docs/faults.md)."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any, cast

from bench.chaos_fleet import _agent, agents
from bench.chaos_reconcile import Call
from sluicegate.gate import Gate


class _HeldGate:
    """Answers a call only when the test releases it; counts the calls in flight at once."""

    def __init__(self) -> None:
        self.in_flight = self.most_in_flight = 0
        self.asked: asyncio.Queue[asyncio.Event] = asyncio.Queue()

    def intent(self, **_: Any) -> SimpleNamespace:
        return SimpleNamespace(request_id=uuid.uuid4())

    async def authorize(self, intent: SimpleNamespace) -> SimpleNamespace:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        answer = asyncio.Event()
        await self.asked.put(answer)
        await answer.wait()
        self.in_flight -= 1
        return SimpleNamespace(decision=SimpleNamespace(decision=SimpleNamespace(value="ALLOW")),
                               unavailable=False, pending=None)


async def test_an_agent_asks_again_only_once_answered() -> None:
    gate, calls = _HeldGate(), list[Call]()
    stop: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    agent = asyncio.create_task(_agent(cast(Gate, gate), agents(["chaos-0000"])[0], 1000.0, 1, calls, stop))
    first = await asyncio.wait_for(gate.asked.get(), 10)
    next_call = asyncio.ensure_future(gate.asked.get())
    done, _ = await asyncio.wait([next_call], timeout=0.2)  # 200 of its intervals: no second call yet
    assert not done and gate.most_in_flight == 1
    first.set()
    second = await asyncio.wait_for(next_call, 10)
    assert [call.answers for call in calls] == [1, 0]
    stop.set_result(None)
    second.set()
    await asyncio.wait_for(agent, 10)
    assert gate.most_in_flight == 1 and [call.answers for call in calls] == [1, 1]
