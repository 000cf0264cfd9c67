"""A simulated fleet: realistic tool calls from support, DevOps, finance and SaaS agents.

Pure generation, no I/O: `FleetSimulator.next_call()` yields the next call an agent of the
fleet wants to make. A few agents misbehave on purpose, so the demo shows every decision:
a refund spree, a bulk delete and an off-hours production deploy.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from schemas import Action


@dataclass(frozen=True, slots=True)
class SimulatedAgent:
    """One agent of the fleet."""

    agent_id: str
    role: str
    environment: str
    owner: str
    misbehaviour: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call an agent is about to make: everything the SDK needs for `Gate.check`."""

    agent: SimulatedAgent
    tool: str
    action: Action
    target: str
    params: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None


CallMaker = Callable[[random.Random, SimulatedAgent], ToolCall]

ROLE_SHARES = {"support": 0.4, "devops": 0.2, "finance": 0.2, "saas": 0.2}
"""Share of the fleet in each role."""

MISBEHAVIOURS = ("refund_spree", "bulk_delete", "off_hours_deploy")


def _support_call(rng: random.Random, agent: SimulatedAgent) -> ToolCall:
    roll = rng.random()
    if roll < 0.45:
        return ToolCall(
            agent, "crm.get_account", Action.READ, "crm:accounts", {"account_id": rng.randint(1, 10**6)}
        )
    if roll < 0.75:
        return ToolCall(agent, "tickets.create", Action.CREATE, "helpdesk:tickets", {"priority": "normal"})
    if roll < 0.995:
        amount = round(min(rng.lognormvariate(3.0, 0.9), 900.0), 2)
        return ToolCall(agent, "payments.refund", Action.CREATE, "payments:refunds", {"amount": amount})
    return ToolCall(agent, "crm.export_customers", Action.READ, "crm:accounts", {"format": "csv"})


def _devops_call(rng: random.Random, agent: SimulatedAgent) -> ToolCall:
    roll = rng.random()
    if roll < 0.5:
        tool = rng.choice(["metrics.query", "logs.search"])
        return ToolCall(agent, tool, Action.READ, "observability:prod", {"query": "error_rate"})
    if roll < 0.75:
        replicas = rng.randint(1, 12)
        return ToolCall(agent, "services.scale", Action.UPDATE, "services:checkout", {"replicas": replicas})
    if roll < 0.95:
        size = rng.choice(["t3.micro", "t3.small", "t3.medium", "m5.xlarge"])
        return ToolCall(
            agent, "instances.provision", Action.CREATE, "compute:instances", {"instance_type": size}
        )
    return ToolCall(agent, "services.deploy", Action.EXECUTE, "services:checkout", {"version": "1.4.2"})


def _finance_call(rng: random.Random, agent: SimulatedAgent) -> ToolCall:
    roll = rng.random()
    if roll < 0.4:
        return ToolCall(agent, "accounts.get_balance", Action.READ, "bank:accounts", {})
    if roll < 0.8:
        amount = round(min(rng.lognormvariate(5.5, 1.2), 40_000.0), 2)
        return ToolCall(agent, "payments.create", Action.CREATE, "bank:payments", {"amount": amount})
    destination = "internal" if rng.random() < 0.8 else "external"
    amount = round(min(rng.lognormvariate(7.0, 1.3), 60_000.0), 2)
    params = {"amount": amount, "destination_type": destination}
    return ToolCall(agent, "transfers.create", Action.CREATE, "bank:transfers", params)


def _saas_call(rng: random.Random, agent: SimulatedAgent) -> ToolCall:
    roll = rng.random()
    entity = rng.choice(["contacts", "deals", "tasks"])
    if roll < 0.5:
        return ToolCall(agent, f"{entity}.list", Action.READ, f"crm:{entity}", {})
    if roll < 0.75:
        return ToolCall(agent, f"{entity}.create", Action.CREATE, f"crm:{entity}", {"record_count": 1})
    if roll < 0.95:
        count = rng.choice([1, 5, 20, 150])
        return ToolCall(agent, f"{entity}.update", Action.UPDATE, f"crm:{entity}", {"record_count": count})
    return ToolCall(
        agent, f"{entity}.delete", Action.DELETE, f"crm:{entity}", {"record_count": rng.randint(1, 5)}
    )


ROLE_CALLS: dict[str, CallMaker] = {
    "support": _support_call,
    "devops": _devops_call,
    "finance": _finance_call,
    "saas": _saas_call,
}


def _misbehaving_call(rng: random.Random, agent: SimulatedAgent, now: datetime) -> ToolCall:
    if agent.misbehaviour == "refund_spree":
        amount = round(rng.uniform(35.0, 50.0), 2)
        return ToolCall(agent, "payments.refund", Action.CREATE, "payments:refunds", {"amount": amount})
    if agent.misbehaviour == "bulk_delete":
        return ToolCall(agent, "contacts.delete", Action.DELETE, "crm:contacts", {"record_count": 25_000})
    night = now.replace(hour=2, minute=rng.randint(0, 59))
    if night > now:
        night -= timedelta(days=1)
    return ToolCall(
        agent, "services.deploy", Action.EXECUTE, "services:payments", {"version": "2.0.0"}, night
    )


def build_fleet(size: int, seed: int = 7) -> list[SimulatedAgent]:
    """A fleet of `size` agents split by `ROLE_SHARES`, the first few of them misbehaving."""
    if size < len(MISBEHAVIOURS) + len(ROLE_SHARES):
        raise ValueError(f"a fleet needs at least {len(MISBEHAVIOURS) + len(ROLE_SHARES)} agents")
    rng = random.Random(seed)
    roles = list(ROLE_SHARES)
    weights = list(ROLE_SHARES.values())
    agents = [
        SimulatedAgent("support-rogue-1", "support", "production", "team-support", "refund_spree"),
        SimulatedAgent("saas-rogue-1", "saas", "production", "team-growth", "bulk_delete"),
        SimulatedAgent("devops-rogue-1", "devops", "production", "team-platform", "off_hours_deploy"),
    ]
    for index in range(size - len(agents)):
        role = roles[index] if index < len(roles) else rng.choices(roles, weights)[0]
        environment = "production" if role != "devops" else rng.choice(["dev", "staging", "production"])
        agents.append(SimulatedAgent(f"{role}-{index:04d}", role, environment, f"team-{role}"))
    return agents


class FleetSimulator:
    """Draws the next tool call of the fleet; once rogue, misbehaving agents act `rogue_share` of the
    time. Before that (the calm period) they work like the rest of their role, which gives every agent a
    history that the audit report compares the rogue period with."""

    def __init__(self, agents: list[SimulatedAgent], seed: int = 7, rogue_share: float = 0.03) -> None:
        self._rng = random.Random(seed)
        self._agents = agents
        self._normal = [agent for agent in agents if agent.misbehaviour is None]
        self._rogues = [agent for agent in agents if agent.misbehaviour is not None]
        self._rogue_share = rogue_share

    def next_call(self, now: datetime, rogue: bool = True) -> ToolCall:
        """The next call; `now` is the wall-clock time the demo stamps on it; `rogue`: whether the
        misbehaving agents misbehave yet."""
        if not rogue:
            agent = self._rng.choice(self._agents)
            return ROLE_CALLS[agent.role](self._rng, agent)
        if self._rogues and self._rng.random() < self._rogue_share:
            return _misbehaving_call(self._rng, self._rng.choice(self._rogues), now)
        agent = self._rng.choice(self._normal)
        return ROLE_CALLS[agent.role](self._rng, agent)
