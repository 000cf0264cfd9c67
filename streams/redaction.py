"""Sensitive parameters (a policy's ``sensitive:``): decided on as usual, stored in the audit only as a
salted hash, with a masked hint where the policy says so.

A redacted value is the text ``redacted:<key id>:<hash>`` (``…:****1234`` with ``show_last: 4``,
:data:`schemas.policy.REDACTED`): an
HMAC-SHA256, under a key derived from the workers' ring for this purpose alone, of the value's canonical
JSON, cut to 128 bits. Equal values give equal hashes under one ring key, so analysts can still group and
join on them; nobody without the ring can test a guess (a card number's space is small enough to try
every value against an unkeyed hash). With trust off there is no ring: the key is a fixed, public one,
which hides the value from a glance only.

Reviewers see approval requests redacted the same way (:meth:`Redactor.request`). Which declarations
apply to a record: those of the policy that decided it (by version), of the policy
in force and of the shadow policy, together (a declaration is never lost to a policy change in flight).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

from schemas.approval import ApprovalRequest
from schemas.audit import AuditRecord
from schemas.intent import Intent, canonical_json
from schemas.policy import Sensitive, has_redacted
from sluicegate.trust import KeyRing
from streams.engine import CompiledPolicy
from streams.policy_source import PolicySource

PREFIX = "redacted:"
PURPOSE = "redaction"
_TRUST_OFF_KEY = hashlib.sha256(b"sluicegate/redaction/trust-off").digest()


class Redactor:
    """Redacts the sensitive parameters of audit records (:data:`streams.audit_chain.Prepare`)."""

    def __init__(self, policies: PolicySource, ring: KeyRing | None) -> None:
        self.policies = policies
        self.key_id = ring.current if ring is not None else "public"
        self.key = ring.derive(ring.current, PURPOSE) if ring is not None else _TRUST_OFF_KEY

    def __call__(self, record: AuditRecord) -> AuditRecord:
        if record.intent is None and record.approval_request is None:
            return record
        fields = self._declared(record)
        if not fields:
            return record
        update: dict[str, Any] = {}
        if record.intent is not None:
            update["intent"] = self.intent(record.intent, fields)
        if record.approval_request is not None:
            request = record.approval_request
            redacted = self.intent(request.intent, fields)
            update["approval_request"] = request.model_copy(update={"intent": redacted})
        return record.model_copy(update=update)

    def request(self, value: bytes) -> bytes:
        """An approval request as reviewers get it: its intent's sensitive params redacted. Its
        ``intent_digest`` stays the digest of the intent as the agent authenticated it, which is what a
        verdict approves; the workers' signature binds the two (reviewers' tools recompute the digest
        only when nothing is redacted: :func:`sluicegate.cli.review.digest_mismatch`)."""
        request = ApprovalRequest.model_validate_json(value)
        fields = self._declared(request)
        redacted = self.intent(request.intent, fields) if fields else request.intent
        if redacted is request.intent:
            return value
        return request.model_copy(update={"intent": redacted}).model_dump_json().encode()

    def _declared(self, record: AuditRecord | ApprovalRequest) -> tuple[Sensitive, ...]:
        judged = record if isinstance(record, ApprovalRequest) else record.decision or record.approval_request
        versions = [judged.policy_version] if judged is not None and judged.policy_version else []
        found: list[CompiledPolicy | None] = [self.policies.version(v) for v in versions]
        found += [self.policies.current, self.policies.shadow]
        return _union(policy.document.sensitive for policy in found if policy is not None)

    def intent(self, intent: Intent, fields: Iterable[Sensitive]) -> Intent:
        """``intent`` with the ``fields`` of its params redacted (the same object when none is there)."""
        params = intent.params
        for field in fields:
            params = self._redacted(params, field.field.split(".")[1:], field.show_last)
        return intent if params is intent.params else intent.model_copy(update={"params": params})

    def _redacted(self, params: dict[str, Any], path: list[str], show_last: int) -> dict[str, Any]:
        head, rest = path[0], path[1:]
        if head not in params:
            return params
        value = params[head]
        if rest:
            if not isinstance(value, dict):
                return params
            inner = self._redacted(value, rest, show_last)
            return params if inner is value else {**params, head: inner}
        if has_redacted(value):
            return params
        return {**params, head: self.token(value, show_last)}

    def token(self, value: Any, show_last: int = 0) -> str:
        """The redacted form of ``value``."""
        canonical = canonical_json(value)
        digest = hmac.new(self.key, canonical.encode(), hashlib.sha256).hexdigest()[:32]
        text = value if isinstance(value, str) else canonical
        hint = f":{'*' * 4}{text[-show_last:]}" if show_last and len(text) > show_last else ""
        return f"{PREFIX}{self.key_id}:{digest}{hint}"


def _union(groups: Iterable[list[Sensitive]]) -> tuple[Sensitive, ...]:
    seen: dict[str, Sensitive] = {}
    for group in groups:
        for item in group:
            kept = seen.get(item.field)
            if kept is None or item.show_last < kept.show_last:  # the stricter hint wins
                seen[item.field] = item
    return tuple(seen.values())
