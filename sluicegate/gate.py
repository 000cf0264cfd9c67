"""The async ``Gate``: publish an intent, wait for its final decision, fail closed.

```python
async with Gate(settings) as gate:   # SLUICEGATE_AGENT_CREDENTIAL: the agent's identity and key
    decision = await gate.check(tool="payments.refund", action="create", target="payments:refunds",
                                params={"amount": 40})

    @gate.guard(tool="payments.refund", action="create", target="payments:refunds",
                params=lambda customer, amount: {"amount": amount})
    async def refund(customer: str, amount: float) -> str: ...
```

**Trust on** (the gate holds credentials: ``SLUICEGATE_AGENT_CREDENTIAL``, ``credential=`` or, for a
process acting for a fleet, ``credentials=[...]``): the agent fields of every intent are its
credential's, every intent carries an ``sg-auth`` header authenticating its exact bytes, and only a
decision authenticated with the agent's key, for the request, agent and action (intent digest) asked
about, is accepted; any other reply is dropped and the call keeps waiting (see ``sluicegate.routing``).
A call names the agent it acts for (``agent_id=``); a role, environment or owner other than that
agent's credential's is an ``InvalidIntent``. **Trust off** (no credential): the agent fields are the
gate's and the call's, nothing is signed or verified, and anyone who can produce to the decisions topic
can answer for the worker: no protection, for a first local try only.

Every failure to get a usable decision — broker unreachable, no decision by the deadline, an unparseable
or foreign reply, the circuit breaker open — gives a BLOCK decision whose reason starts with
``governance_unavailable:``. ``fail_open`` tools run only when governance is unavailable *and* no reply
that failed verification arrived for the call: someone answering in the worker's name is an attack, not
an outage (such calls are audited as security events).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self
from uuid import uuid4

from pydantic import ValidationError

from schemas import (
    Action,
    AuditEventType,
    AuditRecord,
    Decision,
    DecisionKind,
    ExecutionOutcome,
    Intent,
    OutcomeStatus,
    TopicNames,
)
from schemas.decision import APPROVAL_EXPIRED, GOVERNANCE_UNAVAILABLE
from sluicegate.breaker import CircuitBreaker, Permit
from sluicegate.errors import GateNotStarted, InvalidCredential, InvalidIntent
from sluicegate.guard import (
    AsyncGuard,
    Authorization,
    GuardBinding,
    GuardSpec,
    ParamsSpec,
    TargetSpec,
)
from sluicegate.identity import (
    AgentIdentity,
    CredentialLike,
    CredentialsLike,
    Identities,
    collect_credentials,
)
from sluicegate.reply_lease import LeaseOptions
from sluicegate.reports import report_headers
from sluicegate.routing import BadReply, ReplyCheck, ReplyWaiter
from sluicegate.settings import Settings
from sluicegate.transport import KafkaTransport, PublishUncertain, Transport, TransportError
from sluicegate.trust import AUTH_HEADER, AgentCredential

log = logging.getLogger(__name__)

DEFAULT_MAX_APPROVAL_WAIT_S = 3600.0
DEFAULT_FLUSH_TIMEOUT_S = 5.0


WAIT_MARGIN_S = 1.0
"""How long before a call stops waiting its intent's ``wait_until`` falls (at most a quarter of the
timeout): time for a decision made just before it to reach the agent, and for the clocks' skew."""


def _wait_bound(timeout_s: float) -> float:
    """Seconds from now to the ``wait_until`` of a call that waits ``timeout_s``."""
    return timeout_s - min(WAIT_MARGIN_S, timeout_s / 4)


def _now() -> datetime:
    return datetime.now(UTC)


class Gate:
    """The agent's side of sluicegate: one producer and one reply consumer, shared by all its agents.

    ``credential`` / ``credentials`` (or ``SLUICEGATE_AGENT_CREDENTIAL`` when neither is given) turn
    trust on; ``agent_id`` then picks the default agent among them (the only one needs none), and
    ``agent_role``, ``environment`` and ``owner``, when given, must be its credential's. Without any,
    the gate refuses to start (InvalidCredential) unless ``SLUICEGATE_TRUST_OFF`` says trust is off.

    ``on_pending(intent, decision)``, when given, is called once per call as its first REQUIRE_APPROVAL
    (not final) arrives: the moment the call turns from awaiting a decision to awaiting a reviewer (a
    dashboard's "decided" time; the call itself goes on waiting for the final decision).
    """

    def __init__(
        self,
        settings: Settings | str,
        *,
        agent_id: str | None = None,
        agent_role: str | None = None,
        environment: str | None = None,
        owner: str | None = None,
        credential: CredentialLike | None = None,
        credentials: CredentialsLike | None = None,
        labels: Mapping[str, str] | None = None,
        breaker: CircuitBreaker | None = None,
        max_approval_wait_s: float = DEFAULT_MAX_APPROVAL_WAIT_S,
        flush_timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S,
        transport: Transport | None = None,
        on_pending: Callable[[Intent, Decision], None] | None = None,
    ) -> None:
        if not isinstance(settings, Settings):
            settings = Settings(kafka_bootstrap_servers=settings)
        self.settings = settings
        held = collect_credentials(credential, credentials)
        if not held and settings.agent_credential is not None:
            held = collect_credentials(settings.agent_credential.get_secret_value())
        if not held and not settings.trust_off:
            raise InvalidCredential(
                "no agent credential: set SLUICEGATE_AGENT_CREDENTIAL (sluicegate trust agent) or pass "
                "credential=; SLUICEGATE_TRUST_OFF=1 runs without one, where any reply is believed")
        self.identities = Identities(AgentIdentity(agent_id, agent_role, environment, owner), held)
        self.labels = dict(labels or {})
        self.breaker = breaker or CircuitBreaker()
        self.max_approval_wait_s = max_approval_wait_s
        self.flush_timeout_s = flush_timeout_s
        self.on_pending = on_pending
        self.transport: Transport = transport or KafkaTransport(
            self.settings.bootstrap_servers, TopicNames(self.settings.topic_prefix),
            options=self.settings.kafka_client_options(),
            replies=LeaseOptions(sharing=settings.reply_sharing) if settings.reply_leases else None,
        )
        self.topics = self.transport.topics
        self._started = False

    @property
    def identity(self) -> AgentIdentity:
        """The default agent's fields (with credentials: its credential's)."""
        return self.identities.default

    @property
    def trusted(self) -> bool:
        """Whether intents are signed and decisions verified (the gate holds credentials)."""
        return self.identities.trusted

    @property
    def credentials(self) -> Mapping[str, AgentCredential]:
        """The credentials this gate acts with, by agent id (empty: trust off)."""
        return self.identities.credentials

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, *, connect_timeout_s: float | None = None) -> None:
        """Connect (waiting up to the decision timeout); an unreachable broker is retried in background."""
        if self._started:
            return
        await self.transport.start(connect_timeout_s or self.settings.decision_timeout_s)
        self._started = True
        if self.transport.connected:
            default = [self.identity.agent_id] if self.identity.agent_id else []
            await self.prepare(*dict.fromkeys([*default, *self.credentials]))

    async def stop(self) -> None:
        """Flush outcomes and audit records (bounded by ``flush_timeout_s``) and disconnect."""
        if self._started:
            self._started = False
            await self.transport.stop(self.flush_timeout_s)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def connected(self) -> bool:
        return self.transport.connected

    async def prepare(self, *agent_ids: str) -> None:
        """Start reading the decision partitions of these agents now, so their first call is fast."""
        for agent_id in agent_ids:
            await self.transport.ensure_partition(agent_id)

    # -- asking ----------------------------------------------------------------------------------

    def intent(
        self,
        *,
        tool: str,
        action: Action | str,
        target: str,
        params: Mapping[str, Any] | None = None,
        occurred_at: datetime | None = None,
        agent: AgentIdentity | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Intent:
        """The intent for one call (a fresh ``request_id``); ``InvalidIntent`` says what is wrong."""
        who = self.resolve_identity(agent)
        agent_id, agent_role, environment = who.required()
        try:
            return Intent(
                request_id=uuid4(),
                agent_id=agent_id,
                agent_role=agent_role,
                agent_owner=who.owner,
                environment=environment,
                tool=tool,
                action=Action(action),
                target=target,
                params=dict(params or {}),
                occurred_at=occurred_at or _now(),
                labels={**self.labels, **(labels or {})},
            )
        except (ValidationError, ValueError) as exc:
            raise InvalidIntent(f"invalid intent for {tool!r}: {exc}") from exc

    async def check(
        self,
        *,
        tool: str,
        action: Action | str,
        target: str,
        params: Mapping[str, Any] | None = None,
        occurred_at: datetime | None = None,
        agent_id: str | None = None,
        agent_role: str | None = None,
        environment: str | None = None,
        owner: str | None = None,
        labels: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Decision:
        """Publish the intent and return its final decision (a BLOCK when governance is unavailable)."""
        intent = self.intent(
            tool=tool, action=action, target=target, params=params, occurred_at=occurred_at,
            agent=AgentIdentity(agent_id, agent_role, environment, owner), labels=labels,
        )
        return (await self.authorize(intent, timeout_s)).decision

    def resolve_identity(self, agent: AgentIdentity | None) -> AgentIdentity:
        """The agent fields of a call with these overrides; ``InvalidIntent`` when they contradict its
        credential or name an agent this gate holds no credential for."""
        return self.identities.resolve(agent)[0]

    async def authorize(self, intent: Intent, timeout_s: float | None = None) -> Authorization:
        """Publish ``intent`` and wait for its final decision, with how it was reached.

        The intent carries when this call stops waiting (``wait_until``, a margin before the timeout): a
        worker that reaches it later BLOCKs it, so no decision contradicts an answer given here."""
        if not self._started:
            raise GateNotStarted("the gate is not started", request_id=intent.request_id)
        credential = self.identities.credential_for(
            intent.agent_id, intent.agent_role, intent.environment, intent.agent_owner
        )
        timeout_s = timeout_s or self.settings.decision_timeout_s
        intent = intent.model_copy(update={"wait_until": _now() + timedelta(seconds=_wait_bound(timeout_s)),
                                           "reply_key": self.transport.reply_key})
        value = self._encoded(intent)
        permit = self.breaker.acquire()
        if permit is None:
            detail = f"circuit open, processor unreachable; next probe in {self.breaker.retry_in_s:.1f} s"
            return self._unavailable(intent, detail)
        if not self.transport.connected:
            self.breaker.failure(permit)
            return self._unavailable(intent, f"not connected to Kafka ({self.transport.last_error})")
        return await self._exchange(intent, value, permit, timeout_s, credential)

    def _encoded(self, intent: Intent) -> bytes:
        """The intent's JSON; ``InvalidIntent`` when it is over ``max_intent_bytes``: refused here, before
        the broker or a worker would refuse it (which would look like an outage to the breaker)."""
        value = intent.model_dump_json().encode()
        limit = self.settings.max_intent_bytes
        if len(value) > limit:
            raise InvalidIntent(f"the intent for {intent.tool!r} is {len(value)} bytes; the limit is "
                                f"{limit} (SLUICEGATE_MAX_INTENT_BYTES): nothing was sent",
                                request_id=intent.request_id)
        return value

    async def _exchange(
        self, intent: Intent, value: bytes, permit: Permit, timeout_s: float,
        credential: AgentCredential | None,
    ) -> Authorization:
        headers: list[tuple[str, bytes]] = []
        check: ReplyCheck | None = None
        if credential is not None:
            headers.append((AUTH_HEADER, credential.authenticate(value)))
            check = ReplyCheck(credential.key_id, credential.key, intent.digest())
        loop = asyncio.get_running_loop()
        started = loop.time()
        pending: Decision | None = None
        waiter: ReplyWaiter | None = None
        uncertain: PublishUncertain | None = None
        try:
            async with asyncio.timeout_at(started + timeout_s) as scope:
                waiter = await self.transport.expect(intent.request_id, intent.agent_id, check,
                                                     intent.reply_key)
                try:
                    await self.transport.send_intent(intent, value, headers)
                except PublishUncertain as exc:  # it may be decided yet: wait for it, until the deadline
                    uncertain = exc
                while True:
                    decision = await waiter.next()
                    if decision.final:
                        break
                    if pending is None:
                        self.breaker.success(permit)  # the processor answered: it is up
                        if self.on_pending is not None:
                            self.on_pending(intent, decision)
                    pending = decision
                    scope.reschedule(self._approval_deadline(decision, started))
        except TimeoutError:
            late = waiter.delivered_final() if waiter is not None else None
            if late is not None:
                decision = late  # it arrived as the deadline passed: the answer, as if in time
            elif pending is not None:
                return self._settled(waiter, self._expired(intent, pending))
            elif waiter is not None and waiter.rejected_count:
                self.breaker.release(permit)  # someone answers in the worker's name: no sign of an outage
                return self._settled(waiter, self._unavailable(
                    intent, f"no verifiable decision within {timeout_s:g} s", waiter))
            else:
                self.breaker.failure(permit)
                detail = f"no decision within {timeout_s:g} s" + (f" ({uncertain})" if uncertain else "")
                return self._unavailable(intent, detail)
        except TransportError as exc:
            self.breaker.failure(permit)
            return self._settled(waiter, self._unavailable(intent, str(exc), waiter))
        except BadReply as exc:
            self.breaker.release(permit)
            return self._settled(waiter, self._unavailable(intent, str(exc), waiter))
        except BaseException:
            self.breaker.release(permit)
            raise
        finally:
            if waiter is not None:  # not another call's: one already waiting for this id keeps its waiter
                self.transport.forget(intent.request_id)
        if pending is None:
            self.breaker.success(permit)
        return self._settled(waiter, Authorization(intent, decision, pending=pending))

    def _approval_deadline(self, pending: Decision, started: float) -> float:
        """Loop time until which a pending decision is awaited: its deadline plus a grace, bounded."""
        loop_now = asyncio.get_running_loop().time()
        bound = started + self.max_approval_wait_s
        if pending.approval_deadline_at is None:
            return bound
        remaining = (pending.approval_deadline_at - _now()).total_seconds() + self.settings.decision_timeout_s
        return min(bound, loop_now + max(0.0, remaining))

    def _unavailable(self, intent: Intent, detail: str, waiter: ReplyWaiter | None = None) -> Authorization:
        if waiter is not None and waiter.rejected_count:
            count = waiter.rejected_count
            detail = (f"{detail}; {count} {'reply' if count == 1 else 'replies'} that did not verify arrived "
                      f"({waiter.rejected[0]}): someone is answering in the worker's name, so no fail_open "
                      "tool runs")
        log.warning("request %s (%s): governance unavailable: %s", intent.request_id, intent.tool, detail)
        decision = Decision(
            request_id=intent.request_id,
            agent_id=intent.agent_id,
            decision=DecisionKind.BLOCK,
            reasons=(f"{GOVERNANCE_UNAVAILABLE}: {detail}",),
            determining=(GOVERNANCE_UNAVAILABLE,),
            decided_at=_now(),
        )
        return Authorization(intent, decision, unavailable=True)

    def _settled(self, waiter: ReplyWaiter | None, auth: Authorization) -> Authorization:
        """``auth`` with the replies dropped for its request, which are audited as a security event."""
        if waiter is None or not waiter.rejected_count:
            return auth
        auth = dataclasses.replace(auth, rejected=tuple(waiter.rejected))
        note = (f"the SDK dropped {waiter.rejected_count} decision record(s) for this request that did not "
                f"verify with agent {auth.intent.agent_id!r}'s credential: {'; '.join(waiter.rejected)}")
        log.error("request %s (%s): %s", auth.intent.request_id, auth.intent.tool, note)
        record = AuditRecord(
            event_id=f"{auth.intent.request_id}:security:sdk:unverified_reply",
            event_type=AuditEventType.SECURITY,
            event_time=_now(),
            request_id=auth.intent.request_id,
            intent=auth.intent,
            decision=auth.decision,
            note=note[:2000],
        )
        self._report(auth.intent, record)
        return auth

    def _expired(self, intent: Intent, pending: Decision) -> Authorization:
        at = pending.approval_deadline_at
        deadline = at.isoformat() if at is not None else "the wait bound"
        decision = pending.model_copy(
            update={
                "decision": DecisionKind.BLOCK,
                "reasons": (f"{APPROVAL_EXPIRED}: no final decision by {deadline}", *pending.reasons),
                "determining": (APPROVAL_EXPIRED, *pending.determining),
                "decided_at": _now(),
                "final": True,
            }
        )
        return Authorization(intent, decision, pending=pending, expired=True)

    # -- guarding and reporting ------------------------------------------------------------------

    def guard(
        self,
        *,
        tool: str,
        action: Action | str,
        target: TargetSpec,
        params: ParamsSpec = None,
        fail_open: bool = False,
        agent_id: str | None = None,
        agent_role: str | None = None,
        environment: str | None = None,
        owner: str | None = None,
    ) -> AsyncGuard:
        """Decorate a tool: it runs only on ALLOW (or, with ``fail_open``, when governance is unavailable
        and no reply that failed verification arrived). Identity overrides are checked here, once."""
        agent = AgentIdentity(agent_id, agent_role, environment, owner)
        if agent.given:
            self.resolve_identity(agent)
        return AsyncGuard(self.binding(), self.guard_spec(tool, action, target, params, fail_open, agent))

    @staticmethod
    def guard_spec(
        tool: str, action: Action | str, target: TargetSpec, params: ParamsSpec, fail_open: bool,
        agent: AgentIdentity,
    ) -> GuardSpec:
        try:
            kind = Action(action)
        except ValueError as exc:
            raise InvalidIntent(f"invalid action for {tool!r}: {exc}") from exc
        return GuardSpec(tool, kind, target, params, fail_open, agent)

    def binding(self, authorize_blocking: Callable[[Intent], Authorization] | None = None) -> GuardBinding:
        """How guards of this gate build, authorize and report calls."""
        return GuardBinding(
            make_intent=self.guard_intent,
            authorize=self.authorize,
            authorize_blocking=authorize_blocking,
            fail_open=self.record_fail_open,
            outcome=self.record_outcome,
        )

    def guard_intent(self, spec: GuardSpec, target: str, params: dict[str, Any]) -> Intent:
        """The intent of one call of a guarded tool."""
        return self.intent(tool=spec.tool, action=spec.action, target=target, params=params, agent=spec.agent)

    def record_outcome(
        self,
        auth: Authorization,
        status: OutcomeStatus,
        error: str | None,
        duration_ms: float,
        fail_open: bool,
    ) -> None:
        """Publish the ExecutionOutcome of a guarded call in the background (flushed on stop)."""
        outcome = ExecutionOutcome(
            request_id=auth.intent.request_id,
            agent_id=auth.intent.agent_id,
            tool=auth.intent.tool,
            status=status,
            error=error,
            duration_ms=duration_ms,
            finished_at=_now(),
            fail_open=fail_open,
        )
        self._report(auth.intent, outcome)

    def record_fail_open(self, auth: Authorization) -> None:
        """Audit a tool about to run without a decision because governance is unavailable."""
        reason = "; ".join(auth.decision.reasons)
        log.warning("FAIL-OPEN: %s runs without a decision (request %s): %s",
                    auth.intent.tool, auth.intent.request_id, reason)
        record = AuditRecord(
            event_id=f"{auth.intent.request_id}:{AuditEventType.FAIL_OPEN.value}",
            event_type=AuditEventType.FAIL_OPEN,
            event_time=_now(),
            request_id=auth.intent.request_id,
            intent=auth.intent,
            decision=auth.decision,
            note=f"tool {auth.intent.tool} ran without a decision (fail_open): {reason}"[:2000],
        )
        self._report(auth.intent, record)

    def _report(self, intent: Intent, report: ExecutionOutcome | AuditRecord) -> None:
        """Send a report to the outcomes topic, signed with the agent's credential: a worker authenticates
        it and writes it to the audit (:mod:`sluicegate.reports`); agents do not write the audit."""
        credential = self.credentials.get(intent.agent_id)
        sign = None if credential is None else functools.partial(report_headers, credential)
        self.transport.emit(self.topics.outcomes, intent.agent_id, report, sign)
