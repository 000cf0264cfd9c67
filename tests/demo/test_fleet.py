"""The simulated fleet: deterministic, valid intents, every misbehaviour present."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest

from schemas import Intent
from sluicegate.demo.fleet import MISBEHAVIOURS, FleetSimulator, build_fleet

NOW = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)


def _draw(simulator: FleetSimulator, count: int) -> list[Intent]:
    intents = []
    for _ in range(count):
        call = simulator.next_call(NOW)
        intents.append(
            Intent(
                request_id=uuid.uuid4(),
                agent_id=call.agent.agent_id,
                agent_role=call.agent.role,
                agent_owner=call.agent.owner,
                environment=call.agent.environment,
                tool=call.tool,
                action=call.action,
                target=call.target,
                params=call.params,
                occurred_at=call.occurred_at or NOW,
            )
        )
    return intents


def test_fleet_has_every_role_and_misbehaviour() -> None:
    fleet = build_fleet(300)
    assert len(fleet) == 300
    assert {agent.role for agent in fleet} == {"support", "devops", "finance", "saas"}
    assert sorted(a.misbehaviour for a in fleet if a.misbehaviour) == sorted(MISBEHAVIOURS)
    assert len({agent.agent_id for agent in fleet}) == 300


def test_too_small_fleet_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        build_fleet(3)


def test_calls_are_valid_intents_and_deterministic() -> None:
    first = _draw(FleetSimulator(build_fleet(50), seed=1), 2000)
    second = _draw(FleetSimulator(build_fleet(50), seed=1), 2000)
    assert [(i.agent_id, i.tool, i.params) for i in first] == [(i.agent_id, i.tool, i.params) for i in second]
    tools = Counter(intent.tool for intent in first)
    assert tools["payments.refund"] > 0 and tools["services.deploy"] > 0


def test_off_hours_deploy_is_stamped_at_night_in_the_past() -> None:
    simulator = FleetSimulator(build_fleet(20), seed=3, rogue_share=1.0)
    deploys = [i for i in _draw(simulator, 300) if i.agent_id == "devops-rogue-1"]
    assert deploys
    assert all(i.occurred_at.hour == 2 and i.occurred_at <= NOW for i in deploys)


def test_the_rogues_behave_until_the_rogue_period() -> None:
    """The calm period gives every agent, the rogues included, a history to compare the rogue period with."""
    fleet = build_fleet(12)
    rogues = {agent.agent_id for agent in fleet if agent.misbehaviour}
    calm = FleetSimulator(fleet, seed=5, rogue_share=1.0)
    calls = [calm.next_call(NOW, rogue=False) for _ in range(3000)]
    assert rogues <= {call.agent.agent_id for call in calls}
    assert not any(call.params.get("record_count") == 25_000 or call.occurred_at for call in calls)
    later = [calm.next_call(NOW) for _ in range(50)]
    assert {call.agent.agent_id for call in later} <= rogues
