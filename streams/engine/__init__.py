"""The pure, deterministic decision engine: no Kafka, no clock, no globals.

Public API::

    policy = load_policy("policies/examples/financial.yaml")   # or compile_policy(text, source)
    state = InMemoryState()                                     # or any StateStore
    result = evaluate_raw(policy, state, raw_json, context)     # THE entry: bytes in, one Result out
    result.intent, result.decision, result.changes              # parsed intent (None: invalid), decision
    apply(state, result.changes, final)                         # final: the verdict (or after an approval):
                                                                # an ALLOW counts and teaches; sequence
                                                                # rules record the decisions they count
    decide_raw(policy, state, raw_json)                         # replays: evaluate_raw + apply
    decide(policy, state, intent)                               # the same for a parsed intent
    evaluate(policy, state, intent)                             # the core: rules, limits, risk (Evaluation)
    policy.approval_for(decision.rules)                         # approval settings of a REQUIRE_APPROVAL

``context`` (:class:`Context`) is what a worker knows besides the bytes: its clock (``decided_at``), the
intent record's arrival time and the event-time skew it accepts, the limit scopes whose state it holds
and the record's key; :data:`REPLAY` (the default) is a replay's: event time, no bound, every scope.
``sluicegate evaluate``, backtests and policy tests use the same path as the workers.

Every Decision carries ``policy_version`` (content hash) and ``policy_name`` (the policy's ``policy:``),
``rules`` (everything that applied) and ``determining`` (what decided it: the entries whose decision is
the final one, ``default``, or a marker such as ``invalid_intent``; see ``schemas.decision``).

Errors: ``load_policy``/``compile_policy`` raise :class:`PolicyError` (root :class:`EngineError`) whose
``issues`` carry source, line and message. Evaluation never raises: a rule or limit that errors BLOCKs
the intent naming itself; an internal failure BLOCKs with ``engine_error: ...``.

Time is the intent's ``occurred_at`` (ms). Windows are ``(end - window, end]``: an action exactly
``window`` older than the current one is out of the window. A late action is checked against every
window containing it (window state is kept two window lengths back, so this is exact up to one
window of lateness). State per key is bounded: a sum window past 512 entries folds older ones into
buckets that never count less than the exact window (see :class:`WindowState`). Sequence rules
(``sequences``) keep a trail of earlier-action times per key (:class:`TrailState`), judged the same way.

Partitioned workers. Intents are partitioned by agent id, so only limits whose key includes ``agent``
(:attr:`LimitScope.AGENT`) have their state on the agent's partition; limits keyed by fleet, tool,
target or role are :attr:`LimitScope.SHARED`. A worker calls ``evaluate_raw`` with
``Context(scopes=AGENT_SCOPES, ...)`` on the agent's partition; when shared limits match, the result's
``shared`` names their window changes, each partition owning one of those keys checks it with
``evaluate_hop`` and the last one decides with ``combine_hops``. Every change names its ``scope`` and
its string ``key``: window keys start with the limit id and encode the key values (``budget|fleet``,
``tx-per-hour|agent=agent-7``; see :mod:`streams.engine.keys`); history changes are keyed
``<agent>|<tool>`` and always agent-scoped, as are sequence rules' trail changes (:class:`TrailChange`,
applied for the final decisions they count: ``apply(state, changes, final)``). Route each change to
the partition owning its key.
State values serialise with ``WindowState.to_bytes``/``HistoryState.to_bytes`` (and ``from_bytes``).
"""

from streams.engine.compiler import (
    Applied,
    CompiledLimit,
    CompiledPolicy,
    CompiledRule,
    CompiledSequence,
    LimitScope,
    compile_policy,
    load_policy,
)
from streams.engine.entry import (
    REPLAY,
    Context,
    Result,
    combine_hops,
    decide,
    decide_raw,
    evaluate_hop,
    evaluate_intent,
    evaluate_raw,
)
from streams.engine.errors import ConditionError, EngineError, PolicyError, PolicyIssue
from streams.engine.evaluate import (
    AGENT_SCOPES,
    ALL_SCOPES,
    SHARED_SCOPES,
    Change,
    Evaluation,
    LimitOutcome,
    TrailChange,
    WindowChange,
    apply,
    evaluate,
)
from streams.engine.keys import history_key, window_key
from streams.engine.risk import HistoryChange
from streams.engine.state import HistoryState, InMemoryState, StateStore, TrailState, WindowState

__all__ = [
    "AGENT_SCOPES",
    "ALL_SCOPES",
    "REPLAY",
    "SHARED_SCOPES",
    "Applied",
    "Change",
    "CompiledLimit",
    "CompiledPolicy",
    "CompiledRule",
    "CompiledSequence",
    "ConditionError",
    "Context",
    "EngineError",
    "Evaluation",
    "HistoryChange",
    "HistoryState",
    "InMemoryState",
    "LimitOutcome",
    "LimitScope",
    "PolicyError",
    "PolicyIssue",
    "Result",
    "StateStore",
    "TrailChange",
    "TrailState",
    "WindowChange",
    "WindowState",
    "apply",
    "combine_hops",
    "compile_policy",
    "decide",
    "decide_raw",
    "evaluate",
    "evaluate_hop",
    "evaluate_intent",
    "evaluate_raw",
    "history_key",
    "load_policy",
    "window_key",
]
