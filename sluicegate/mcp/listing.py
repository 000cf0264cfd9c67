"""Which tools the policy BLOCKs whatever their arguments: the static question ``tools/list`` asks.

Answered from the compiled policy alone, for one agent (id, role, environment) and a tool whose action
and, unless its target is a template over the arguments, target are known before any call:

- a BLOCK rule for the tool and action with no ``when`` whose ``match`` holds for that agent and
  target always applies, and BLOCK beats everything;
- when no rule can apply (each candidate's ``match`` fails for that agent or target) the policy's
  default decides, and limits and risk thresholds can only make it stricter.

Anything that depends on the arguments, on windows or on risk is left to the workers: a tool is hidden
only when every call of it would be BLOCKed. Hiding is a courtesy to the model; each call is still
decided by the workers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from schemas import Action, DecisionKind, Intent
from schemas.decision import DEFAULT
from streams.engine.compiler import CompiledPolicy, CompiledRule

_PROBE_ID = UUID(int=0)
_UNKNOWN_TARGET = "unknown:target"


def _probe(tool: str, action: Action, target: str | None, agent: tuple[str, str, str]) -> Intent:
    agent_id, role, environment = agent
    return Intent(request_id=_PROBE_ID, agent_id=agent_id, agent_role=role, environment=environment,
                  tool=tool, action=action, target=target or _UNKNOWN_TARGET, occurred_at=datetime.now(UTC))


def _may_apply(rule: CompiledRule, probe: Intent, target_known: bool) -> bool | None:
    """True: applies to every call; False: to none; None: depends on the call."""
    match = rule.match
    if not target_known and match.target is not None:
        identity_fails = not (
            (match.environments is None or probe.environment in match.environments)
            and (match.roles is None or probe.agent_role in match.roles)
            and (match.agents is None or probe.agent_id in match.agents))
        return False if identity_fails else None
    if rule.rest is not None and not rule.rest(probe):
        return False
    return True if rule.when is None else None


def always_blocked(
    policy: CompiledPolicy, tool: str, action: Action, target: str | None, agent: tuple[str, str, str]
) -> tuple[str, ...]:
    """The ids that BLOCK every call of ``tool`` by this agent (a rule's, or ``default``); () when some
    call may not be BLOCKed. ``target`` None: it depends on the arguments."""
    probe = _probe(tool, action, target, agent)
    possible = False
    for rule in policy.rules_for(tool, action):
        applies = _may_apply(rule, probe, target is not None)
        if applies and rule.decision is DecisionKind.BLOCK:
            return (rule.id,)
        possible = possible or applies is not False
    if not possible and policy.default is DecisionKind.BLOCK:
        return (DEFAULT,)
    return ()
