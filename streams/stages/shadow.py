"""Shadow evaluation: a candidate policy decided beside the active one on every intent, never enforced.

The decide stage calls :meth:`Shadow.judge` after deciding an intent with the active policy, only when a
shadow policy is published (:attr:`streams.policy_source.PolicySource.shadow`): without one it costs a
single ``is None`` test. The shadow keeps window and history state of its own, in the decide stage's
table under the prefix :data:`SHADOW_PREFIX` (so in its changelog, restored like the active state): its
limits count the shadow's own ALLOWs, its risk history learns from them, and nothing it does touches
what the active policy counts. A shadow REQUIRE_APPROVAL has no reviewer, so it counts nothing.

Its decision goes to the audit as a ``shadow_decision`` event of the same request (with, for a
REQUIRE_APPROVAL, the approval request it would have opened, which names the reviewer group), next
to the enforced decision: ``sluicegate policy shadow-report`` compares the two.

Limits keyed by fleet, tool, target or role are counted per intents partition here (the shadow makes
no hops between partitions), so a shadow's shared budget sees only its partition's share of the
traffic: its flips on such limits are a lower bound.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

from schemas.audit import AuditEventType, AuditRecord
from schemas.common import DecisionKind
from schemas.decision import Decision
from schemas.intent import Intent
from streams.engine import ALL_SCOPES, CompiledPolicy, Context, WindowChange, apply, evaluate_intent
from streams.stages.outputs import Send, approval_request, audit_send
from streams.state.table_state import BytesTable, TableState

SHADOW_PREFIX = "s|"
"""Key prefix of the shadow's window and history state in the decide stage's table."""
_ALLOW, _APPROVAL, _BLOCK = DecisionKind.ALLOW, DecisionKind.REQUIRE_APPROVAL, DecisionKind.BLOCK


class PrefixedTable(MutableMapping[str, bytes]):
    """The keys of ``table`` that start with ``prefix``, seen without it."""

    __slots__ = ("prefix", "table")

    def __init__(self, table: BytesTable, prefix: str) -> None:
        self.table, self.prefix = table, prefix

    def __getitem__(self, key: str) -> bytes:
        return self.table[self.prefix + key]

    def get(self, key: str, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        return self.table.get(self.prefix + key, default)

    def __setitem__(self, key: str, value: bytes) -> None:
        self.table[self.prefix + key] = value

    def __delitem__(self, key: str) -> None:
        del self.table[self.prefix + key]

    def __iter__(self) -> Iterator[str]:
        return (key[len(self.prefix):] for key in self.table if key.startswith(self.prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class Shadow:
    """Decides intents with a shadow policy on its own state and audits what it decided."""

    def __init__(self, table: BytesTable, max_event_skew_ms: int | None = None) -> None:
        self.state = TableState(PrefixedTable(table, SHADOW_PREFIX))
        self.max_event_skew_ms = max_event_skew_ms

    def judge(self, policy: CompiledPolicy, intent: Intent, now_ms: int, appended_ms: int | None) -> Send:
        """The shadow's decision on ``intent`` (first delivery only), counted on the shadow's state when
        it is ALLOW (a BLOCK only on the trails of sequence rules that count BLOCKs), as its audit
        record. Never raises (the engine does not)."""
        context = Context(now_ms, appended_ms, self.max_event_skew_ms, ALL_SCOPES)
        result = evaluate_intent(policy, self.state, intent, context)
        decision = result.decision
        if decision.decision is _ALLOW:
            for change in result.changes:
                if isinstance(change, WindowChange):
                    self.state.add_once(change, intent.request_id)
            apply(self.state, [c for c in result.changes if not isinstance(c, WindowChange)])
        elif decision.decision is _BLOCK:  # a sequence rule may count the shadow's BLOCKs
            apply(self.state, result.changes, _BLOCK)
        return shadow_send(intent, decision, policy, now_ms)


def shadow_send(intent: Intent, decision: Decision, policy: CompiledPolicy, now_ms: int) -> Send:
    """The ``shadow_decision`` audit record of a request (keyed like its other audit records)."""
    request = approval_request(intent, decision, policy, now_ms) if decision.decision is _APPROVAL else None
    audit = AuditRecord(
        event_id=f"{intent.request_id}:shadow:{decision.policy_version}",
        event_type=AuditEventType.SHADOW_DECISION, event_time=decision.decided_at,
        request_id=intent.request_id, intent=intent, decision=decision, approval_request=request,
    )
    return audit_send(audit)
