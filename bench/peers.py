"""The engines a user would pick instead of sluicegate's, given the same rules: ``bench/engine.py --peers``.

The rules are the engine benchmark's policy (its ``rules:`` section only: tool, action, target,
environment, parameter thresholds, a schedule, a regex), translated for each peer from the same YAML:

- **Cedar** (``cedarpy``): one ``permit`` per ALLOW rule, one ``forbid`` per BLOCK or REQUIRE_APPROVAL
  rule, parsed once into a ``PolicySet``; sluicegate's verdict is read back from the policies that
  determined Cedar's answer (a BLOCK rule among them: BLOCK; else an approval rule: REQUIRE_APPROVAL;
  else ALLOW when permitted; no rule: the default, BLOCK). A rule whose field is missing from the
  intent is an evaluation error in sluicegate, i.e. BLOCK: a ``forbid`` says so. Cedar has no time
  zones: whether the intent's time is within business hours is computed in Python into the request
  context, and that is timed as part of Cedar's evaluation.
- **The Agent Governance Toolkit** (``agent-governance-toolkit-core``, ``PolicyEvaluator``): its rules
  hold one condition each, so a rule's match (tool, action, target, environment) becomes one regex over
  a ``tool|action|target|environment`` string, and its ``when`` conditions (amounts, counts, schedule,
  region) cannot be expressed and are dropped; the first matching rule by priority decides (BLOCK
  first, then approvals as ``audit``, then ALLOW). Its decisions therefore differ where a ``when``
  matters: counted in ``decisions_equal``, not hidden.

Each peer is timed per intent from the parsed intent to its verdict, as sluicegate's rules-only
evaluation is (the same rules, no limits, no risk, its Decision built), in CPU time of the thread
(``thread_time_ns``): on a shared machine, wall time would inflate the longer calls more (they are
preempted more often), which would flatter the fastest engine.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable
from datetime import time
from time import thread_time_ns
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from schemas import DecisionKind, Intent
from streams.engine import InMemoryState, compile_policy, evaluate

_ALLOW, _APPROVAL, _BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK
PARIS = ZoneInfo("Europe/Paris")
Verdict = Callable[[Intent], DecisionKind]


def rules_only(policy_yaml: str) -> str:
    """The policy without its limits and risk model."""
    return policy_yaml.split("\nlimits:", 1)[0] + "\n"


def _literal(value: Any) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _one_of(attribute: str, values: list[Any] | Any) -> str:
    """``attribute`` equal to (or, for a glob, like) one of ``values``."""
    values = dict.fromkeys(values if isinstance(values, list) else [values])
    return "(" + " || ".join(f"{attribute} {'like' if '*' in str(v) else '=='} {_literal(v)}"
                             for v in values) + ")"


def _cents(value: float) -> int:
    return round(value * 100)


def _cedar_when(cond: dict[str, Any]) -> tuple[str, str | None]:
    """(condition, missing): a Cedar expression for a ``when`` condition, and the expression under which
    it cannot be evaluated (a missing field without default: sluicegate BLOCKs), if any."""
    if "all" in cond:
        parts = [_cedar_when(c) for c in cond["all"]]
        unknown = " || ".join(m for _, m in parts if m)
        return "(" + " && ".join(c for c, _ in parts) + ")", unknown or None
    if "not" in cond:
        inner, missing = _cedar_when(cond["not"])
        return f"!{inner}", missing
    if "schedule" in cond:
        return "context.business_hours", None
    field, op, value = cond["field"], cond["op"], cond["value"]
    if field == "environment":
        return _one_of("context.environment", value), None
    name = field.removeprefix("params.")
    attr = f"context.{name}"
    if op == "regex":  # the bench's regexes are anchored prefixes: ^eu-1
        return f"({attr} like {_literal(value.removeprefix('^') + '*')})", f"!(context has {name})"
    operator = {"lte": "<=", "lt": "<", "gte": ">=", "gt": ">"}[op]
    compared = f"({attr} {operator} {_cents(value)})"
    if "default" in cond:
        fallback = "true" if _compare(_cents(cond["default"]), operator, _cents(value)) else "false"
        return f"(if context has {name} then {compared} else {fallback})", None
    return f"(context has {name} && {compared})", f"!(context has {name})"


def _compare(left: int, operator: str, right: int) -> bool:
    return {"<=": left <= right, "<": left < right, ">=": left >= right, ">": left > right}[operator]


def cedar_policies(policy_yaml: str) -> tuple[str, list[DecisionKind]]:
    """The rules as Cedar policies, and the verdict each policy stands for (by position: Cedar names
    them ``policy0``, ``policy1``, ...)."""
    text: list[str] = []
    kinds: list[DecisionKind] = []
    for rule in yaml.safe_load(policy_yaml)["rules"]:
        match = rule["match"]
        scope = [_one_of("context.tool", match["tool"])]
        if "action" in match:
            scope.append(_one_of("context.action", match["action"]))
        if "target" in match:
            scope.append(_one_of("context.target", match["target"]))
        if "environment" in match:
            scope.append(_one_of("context.environment", match["environment"]))
        kind = DecisionKind(rule["decision"])
        condition, missing = _cedar_when(rule["when"]) if "when" in rule else ("true", None)
        effect = "permit" if kind is _ALLOW else "forbid"
        text.append(f"{effect}(principal, action, resource) when {{ {' && '.join(scope)} && {condition} }};")
        kinds.append(kind)
        if missing:
            text.append(f"forbid(principal, action, resource) when {{ {' && '.join(scope)} && ({missing}) }};"
                        )
            kinds.append(_BLOCK)
    return "\n".join(text), kinds


def business_hours(intent: Intent) -> bool:
    """The bench policy's schedule (Europe/Paris, Monday to Friday, 09:00-18:00) at the intent's time."""
    local = intent.occurred_at.astimezone(PARIS)
    return local.weekday() < 5 and time(9) <= local.time() < time(18)


def cedar_verdict(policy_yaml: str) -> Verdict:
    """Cedar deciding the rules of ``policy_yaml``: a function from an intent to its verdict."""
    import cedarpy

    text, kinds = cedar_policies(policy_yaml)
    policies = cedarpy.PolicySet.from_str(text)
    entities = cedarpy.Entities.from_json_str("[]")
    by_id = {f"policy{index}": kind for index, kind in enumerate(kinds)}

    def verdict(intent: Intent) -> DecisionKind:
        context: dict[str, Any] = {
            "tool": intent.tool, "action": intent.action.value, "target": intent.target,
            "environment": intent.environment, "business_hours": business_hours(intent)}
        for name, value in intent.params.items():
            context[name] = _cents(value) if isinstance(value, int | float) else value
        request = {"principal": {"type": "Agent", "id": intent.agent_id},
                   "action": {"type": "Action", "id": "call"},
                   "resource": {"type": "Tool", "id": intent.tool}, "context": context}
        result = cedarpy.is_authorized(request, policies, entities)
        found = {by_id[reason] for reason in result.diagnostics.reasons}
        if result.allowed:
            return _ALLOW
        return _APPROVAL if found and _BLOCK not in found else _BLOCK

    return verdict


def _glob(pattern: str) -> str:
    return re.escape(pattern).replace(r"\*", "[^|]*")


def toolkit_verdict(policy_yaml: str) -> Verdict:
    """The toolkit's ``PolicyEvaluator`` with one single-condition rule per rule (``when`` dropped)."""
    from agent_os.policies import (
        PolicyAction,
        PolicyCondition,
        PolicyDefaults,
        PolicyDocument,
        PolicyEvaluator,
        PolicyOperator,
        PolicyRule,
    )

    actions = {_BLOCK: (PolicyAction.DENY, 3), _APPROVAL: (PolicyAction.AUDIT, 2),
               _ALLOW: (PolicyAction.ALLOW, 1)}
    rules = []
    for rule in yaml.safe_load(policy_yaml)["rules"]:
        match = rule["match"]
        parts = []
        for key in ("tool", "action", "target", "environment"):
            values = match.get(key, "*")
            values = values if isinstance(values, list) else [values]
            parts.append("(?:" + "|".join(_glob(str(v)) for v in values) + ")")
        action, priority = actions[DecisionKind(rule["decision"])]
        rules.append(PolicyRule(
            name=rule["id"], action=action, priority=priority,
            condition=PolicyCondition(field="call", operator=PolicyOperator.MATCHES,
                                      value="^" + r"\|".join(parts) + "$")))
    evaluator = PolicyEvaluator([PolicyDocument(name="bench", rules=rules,
                                                defaults=PolicyDefaults(action=PolicyAction.DENY))])
    back = {"allow": _ALLOW, "audit": _APPROVAL}

    def verdict(intent: Intent) -> DecisionKind:
        call = f"{intent.tool}|{intent.action.value}|{intent.target}|{intent.environment}"
        return back.get(evaluator.evaluate({"call": call}).action, _BLOCK)

    return verdict


def sluicegate_verdict(policy_yaml: str) -> Verdict:
    """sluicegate's engine on the same rules (no limits, no risk), its Decision built."""
    policy = compile_policy(policy_yaml, "bench-rules.yaml")
    state = InMemoryState()

    def verdict(intent: Intent) -> DecisionKind:
        return evaluate(policy, state, intent).decision.decision

    return verdict


def timed(verdict: Verdict, intents: list[Intent]) -> tuple[list[int], list[DecisionKind]]:
    """Sorted ns per intent, and the verdicts in intent order."""
    times: list[int] = []
    verdicts: list[DecisionKind] = []
    gc.collect()
    gc.freeze()
    for intent in intents:
        began = thread_time_ns()
        kind = verdict(intent)
        times.append(thread_time_ns() - began)
        verdicts.append(kind)
    gc.unfreeze()
    times.sort()
    return times, verdicts


def peers(policy_yaml: str, intents: list[Intent], repeat: int = 1) -> dict[str, Any]:
    """Each engine on the rules of ``policy_yaml`` over ``intents``, alternating ``repeat`` passes (the
    best p50 of each): p50/p99 in µs and how many verdicts equal sluicegate's; ``p50_vs_best_peer``."""
    rules = rules_only(policy_yaml)
    engines: dict[str, Verdict] = {"sluicegate_rules": sluicegate_verdict(rules)}
    notes: dict[str, str] = {}
    for name, factory in (("cedar", cedar_verdict), ("agent_governance_toolkit", toolkit_verdict)):
        try:
            engines[name] = factory(rules)
        except ImportError as exc:
            notes[name] = f"not installed ({exc.name}): pip install -e '.[bench]'"
    best: dict[str, tuple[list[int], list[DecisionKind]]] = {}
    for _ in range(repeat):
        for name, verdict in engines.items():
            run = timed(verdict, intents)
            if name not in best or _p(run[0], 0.5) < _p(best[name][0], 0.5):
                best[name] = run
    reference = best["sluicegate_rules"][1]
    out: dict[str, Any] = {}
    for name, (times, verdicts) in best.items():
        out[name] = {"p50_us": _p(times, 0.5), "p99_us": _p(times, 0.99),
                     "decisions_equal": sum(a is b for a, b in zip(verdicts, reference, strict=True)),
                     "intents": len(intents)}
    if "agent_governance_toolkit" in out:
        notes["agent_governance_toolkit"] = (
            "one condition per rule: each rule's match is one regex, its when conditions (amounts, counts, "
            "schedule, region) cannot be expressed, hence the unequal decisions")
    peer_p50 = [v["p50_us"] for k, v in out.items() if k != "sluicegate_rules"]
    mine = out["sluicegate_rules"]["p50_us"]
    out["p50_vs_best_peer"] = round(mine / min(peer_p50), 3) if peer_p50 else None
    out["notes"] = notes
    return out


def _p(sorted_ns: list[int], fraction: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(fraction * len(sorted_ns)))] / 1000


__all__ = ["business_hours", "cedar_policies", "peers", "rules_only"]
