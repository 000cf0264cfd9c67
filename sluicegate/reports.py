"""Agent reports: what an agent's SDK tells the audit (an execution outcome, a fail-open run, a reply
that did not verify) goes to the outcomes topic, never to the audit topic, which only workers write.

A worker reads the report, authenticates it with the agent's key and writes it to the audit
(:mod:`streams.runtime.outcomes`); a report that does not verify is audited as a security event instead.
With trust on, a report carries :data:`~sluicegate.trust.AUTH_HEADER` over its exact bytes and
:data:`REPORTER_HEADER`, the identity whose key made it (a worker derives that key from it).
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from schemas import AuditRecord, ExecutionOutcome
from sluicegate.trust import AUTH_HEADER, AgentCredential, TrustError, header

REPORTER_HEADER = "sg-agent"
"""The reporting agent's identity: JSON ``{"id", "role", "env", "owner"}``, as in its credential."""

Report = ExecutionOutcome | AuditRecord


def report_headers(credential: AgentCredential, value: bytes) -> list[tuple[str, bytes]]:
    """The headers authenticating ``value`` as a report of ``credential``'s agent."""
    identity = {"id": credential.agent_id, "role": credential.role, "env": credential.environment,
                "owner": credential.owner}
    return [(AUTH_HEADER, credential.authenticate(value)),
            (REPORTER_HEADER, json.dumps(identity, separators=(",", ":")).encode())]


def reporter(headers: object) -> tuple[str, str, str, str | None]:
    """(agent id, role, environment, owner) a report's headers claim; TrustError when absent or bad."""
    raw = header(headers, REPORTER_HEADER)
    if not raw:
        raise TrustError(f"no {REPORTER_HEADER} header")
    try:
        identity = json.loads(raw)
        owner = identity.get("owner")
        return (str(identity["id"]), str(identity["role"]), str(identity["env"]),
                None if owner is None else str(owner))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TrustError(f"malformed {REPORTER_HEADER} header: {exc!r}") from None


def parse_report(value: bytes | None) -> Report:
    """An ExecutionOutcome, or an AuditRecord (fail-open run, security event); ValueError otherwise."""
    if not value:
        raise ValueError("empty report")
    try:
        kind = json.loads(value)
        if isinstance(kind, dict) and "event_type" in kind:
            return AuditRecord.model_validate_json(value)
        return ExecutionOutcome.model_validate_json(value)
    except ValidationError as exc:
        raise ValueError(f"invalid report: {exc}") from None
