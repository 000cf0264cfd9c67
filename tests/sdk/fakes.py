"""A scripted in-memory transport for unit tests of the gate and the guard (no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from schemas import AuditRecord, Decision, DecisionKind, ExecutionOutcome, Intent, TopicNames
from schemas.common import WireModel
from sluicegate.routing import ReplyCheck, ReplyDemux, ReplyWaiter
from sluicegate.transport import RecordHeaders, Signer, TransportError
from sluicegate.trust import AUTH_HEADER, AgentCredential, authenticator


@dataclass(frozen=True)
class Record:
    """A reply as it sits on the decisions topic: the value's bytes and the record headers."""

    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


Reply = Decision | bytes | Record
Responder = Callable[[Intent], Sequence[Reply]]


def decision_for(intent: Intent, kind: DecisionKind = DecisionKind.ALLOW, **fields: object) -> Decision:
    """A decision answering ``intent`` (with its intent digest, as a worker fills it)."""
    values: dict[str, object] = {
        "request_id": intent.request_id,
        "agent_id": intent.agent_id,
        "decision": kind,
        "decided_at": datetime.now(UTC),
        "intent_digest": intent.digest(),
    }
    values.update(fields)
    return Decision.model_validate(values)


def signed(decision: Decision, credential: AgentCredential, key_id: str | None = None) -> Record:
    """``decision`` authenticated as a worker does: an ``sg-auth`` header over its exact bytes under the
    agent's key (``key_id`` overrides the id written in the header)."""
    value = decision.model_dump_json().encode()
    mac = authenticator(key_id or credential.key_id, credential.key, value)
    return Record(value, ((AUTH_HEADER, mac),))


def pending_for(intent: Intent, deadline_in_s: float | None = None) -> Decision:
    """A pending REQUIRE_APPROVAL decision with an approval deadline ``deadline_in_s`` from now."""
    deadline = datetime.now(UTC) + timedelta(seconds=deadline_in_s) if deadline_in_s is not None else None
    return decision_for(
        intent, DecisionKind.REQUIRE_APPROVAL, final=False, approval_deadline_at=deadline,
        reasons=("refund above 50 needs approval",), rules=("refund-approval",),
    )


class FakeTransport:
    """Answers each published intent with the responder's replies, fed through a real ``ReplyDemux``."""

    def __init__(self, responder: Responder | None = None, *, connected: bool = True) -> None:
        self.topics = TopicNames("fake")
        self.demux = ReplyDemux()
        self.responder = responder
        self.is_connected = connected
        self.send_error: str | None = None
        self.sent: list[Intent] = []
        self.records: list[Record] = []
        self.emitted: list[tuple[str, str, WireModel]] = []
        self.stopped = False

    @property
    def connected(self) -> bool:
        return self.is_connected

    @property
    def last_error(self) -> str:
        return "" if self.is_connected else "fake broker down"

    async def start(self, wait_s: float) -> None:
        return None

    async def stop(self, flush_timeout_s: float) -> None:
        self.demux.fail_all("gate stopped")
        self.stopped = True

    async def ensure_partition(self, agent_id: str) -> None:
        return None

    reply_key: str | None = None

    async def expect(
        self, request_id: UUID, agent_id: str, check: ReplyCheck | None = None, reply_key: str | None = None,
    ) -> ReplyWaiter:
        return self.demux.register(request_id, agent_id, check)

    def forget(self, request_id: UUID) -> None:
        self.demux.unregister(request_id)

    async def send_intent(self, intent: Intent, value: bytes, headers: RecordHeaders = ()) -> None:
        if self.send_error is not None:
            raise TransportError(self.send_error)
        self.sent.append(intent)
        self.records.append(Record(value, tuple(headers)))
        replies = self.responder(intent) if self.responder is not None else ()
        loop = asyncio.get_running_loop()
        for reply in replies:
            if not isinstance(reply, Record):
                reply = Record(reply if isinstance(reply, bytes) else reply.model_dump_json().encode())
            loop.call_soon(self.demux.feed, 0, intent.agent_id.encode(), reply.value, reply.headers)

    def emit(self, topic: str, key: str, payload: WireModel, sign: Signer | None = None) -> None:
        self.emitted.append((topic, key, payload))

    def audited(self) -> list[AuditRecord]:
        """The audit records reported (to the outcomes topic: only workers write the audit)."""
        return [p for p in self.emitted_on(self.topics.outcomes) if isinstance(p, AuditRecord)]

    def outcomes(self) -> list[ExecutionOutcome]:
        return [p for p in self.emitted_on(self.topics.outcomes) if isinstance(p, ExecutionOutcome)]

    def emitted_on(self, topic: str) -> list[WireModel]:
        return [payload for t, _, payload in self.emitted if t == topic]
