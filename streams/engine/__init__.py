"""The pure, deterministic decision engine: no Kafka, no clock, no globals.

Public API::

    policy = load_policy("policies/examples/financial.yaml")   # or compile_policy(text, source)
    state = InMemoryState()                                     # or any StateStore
    result = evaluate(policy, state, intent)                    # Evaluation; reads state only
    if result.kind is DecisionKind.ALLOW:                       # the verdict (or after an approval)
        apply(state, result.changes)                            # only allowed actions count/teach
    result.decision                                             # the wire Decision, built on first access
    decide(policy, state, intent)                               # evaluate + apply on ALLOW
    decide_raw(policy, state, raw_json)                         # + parse; invalid -> BLOCK invalid_intent
    policy.approval_for(decision.rules)                         # approval settings of a REQUIRE_APPROVAL

Every Decision carries ``policy_version`` (content hash) and ``policy_name`` (the policy's ``policy:``).

Errors: ``load_policy``/``compile_policy`` raise :class:`PolicyError` (root :class:`EngineError`) whose
``issues`` carry source, line and message. Evaluation never raises: a rule or limit that errors BLOCKs
the intent naming itself; an internal failure BLOCKs with ``engine_error: ...``.

Time is the intent's ``occurred_at`` (ms). Windows are ``(end - window, end]``: an action exactly
``window`` older than the current one is out of the window. A late action is checked against every
window containing it (window state is kept two window lengths back, so this is exact up to one
window of lateness).

Partitioned workers. Intents are partitioned by agent id, so only limits whose key includes ``agent``
(:attr:`LimitScope.AGENT`) have their state on the agent's partition; limits keyed by fleet, tool,
target or role are :attr:`LimitScope.SHARED`. A worker evaluates
``evaluate(policy, local, intent, scopes=AGENT_SCOPES)`` on the agent's partition,
``evaluate_limits(policy, shared, intent, scopes=SHARED_SCOPES)`` where the shared keys live, and
``combine(policy, evaluation, outcome, intent)`` merges them. Every change names its ``scope`` and its
string ``key``: window keys start with the limit id and encode the key values
(``budget|fleet``, ``tx-per-hour|agent=agent-7``; see :mod:`streams.engine.keys`); history changes
are keyed ``<agent>|<tool>`` and always agent-scoped. Route each change to the partition owning its key.
State values serialise with ``WindowState.to_bytes``/``HistoryState.to_bytes`` (and ``from_bytes``).
"""

from streams.engine.compiler import (
    Applied,
    CompiledLimit,
    CompiledPolicy,
    CompiledRule,
    LimitScope,
    compile_policy,
    load_policy,
)
from streams.engine.errors import ConditionError, EngineError, PolicyError, PolicyIssue
from streams.engine.evaluate import (
    AGENT_SCOPES,
    ALL_SCOPES,
    SHARED_SCOPES,
    Change,
    Evaluation,
    LimitOutcome,
    WindowChange,
    apply,
    block_event_time,
    block_no_policy,
    combine,
    decide,
    decide_raw,
    evaluate,
    evaluate_limits,
    invalid_intent,
    parse_intent,
)
from streams.engine.keys import history_key, window_key
from streams.engine.risk import HistoryChange
from streams.engine.state import HistoryState, InMemoryState, StateStore, WindowState

__all__ = [
    "AGENT_SCOPES",
    "ALL_SCOPES",
    "SHARED_SCOPES",
    "Applied",
    "Change",
    "CompiledLimit",
    "CompiledPolicy",
    "CompiledRule",
    "ConditionError",
    "EngineError",
    "Evaluation",
    "HistoryChange",
    "HistoryState",
    "InMemoryState",
    "LimitOutcome",
    "LimitScope",
    "PolicyError",
    "PolicyIssue",
    "StateStore",
    "WindowChange",
    "WindowState",
    "apply",
    "block_event_time",
    "block_no_policy",
    "combine",
    "compile_policy",
    "decide",
    "decide_raw",
    "evaluate",
    "evaluate_limits",
    "history_key",
    "invalid_intent",
    "load_policy",
    "parse_intent",
    "window_key",
]
