"""The workers' side of trust (:mod:`sluicegate.trust`): what they check on the way in, and how they
authenticate what they send.

In: an intent must carry its agent's authenticator (the key derived from the identity it claims), be
keyed by its agent id and sit on the partition Kafka's default partitioner gives that key; otherwise
the engine BLOCKs it (``unauthenticated`` / ``wrong_partition``) and it counts against nothing. A
verdict must be signed by the reviewer it names or by a Slack bot; internal hops by the workers.

Out (:meth:`WorkerTrust.seal`): a decision is authenticated with its agent's key under every key id of
the ring (an agent holds one of them, so rotation needs no state); internal hops with the internal
key; approval requests and approval finals are signed with the workers' Ed25519 key, which the Slack
bot and the CLI verify without being able to sign.

With trust off (``SLUICEGATE_TRUST_OFF``: a first local try) nothing is checked or sealed, except the
partition of an intent, which limits need whatever the trust setting.
"""

from __future__ import annotations

import functools
from typing import Any

from aiokafka.structs import ConsumerRecord

from schemas.decision import UNAUTHENTICATED, WRONG_PARTITION
from schemas.intent import Intent
from sluicegate.routing import partition_for
from sluicegate.trust import (
    AUTH_HEADER,
    KeyRing,
    RequestSigner,
    TrustError,
    agent_names,
    authenticator,
    header,
    verify,
    verify_signed,
)
from streams.stages.outputs import Route, Send

INTERNAL_ROUTES = frozenset({Route.SHARED, Route.FEEDBACK, Route.APPROVAL_CONTROL})
SIGNED_ROUTES = frozenset({Route.APPROVAL_REQUESTS, Route.APPROVAL_RESULTS})
VERDICT_SIGNERS = ("reviewer", "bot")

@functools.lru_cache(maxsize=1 << 17)
def _home(agent: str, partitions: int) -> int:
    """The partition of ``agent``'s intents (murmur2 in Python costs microseconds: computed once)."""
    return partition_for(agent, partitions)


Refusal = tuple[str, str]
"""(marker, detail): why an intent is refused before the policy sees it."""


class WorkerTrust:
    """The ring and the request key of the workers (both None: trust off)."""

    def __init__(self, ring: KeyRing | None, signer: RequestSigner | None, partitions: int) -> None:
        if (ring is None) != (signer is None):
            raise TrustError("trust needs both the key ring and the signing key (sluicegate trust init)")
        self.ring, self.signer, self.partitions = ring, signer, partitions

    @property
    def on(self) -> bool:
        return self.ring is not None

    # -- in -------------------------------------------------------------------------------------------

    def admit(self, intent: Intent, record: ConsumerRecord[Any, Any]) -> Refusal | None:
        """Why ``intent`` (read from ``record``) may not be decided, or None."""
        agent = intent.agent_id
        if record.key != agent.encode():
            return WRONG_PARTITION, f"the record's key must be the agent id {agent!r}"
        expected = _home(agent, self.partitions)
        if record.partition != expected:
            return WRONG_PARTITION, (f"agent {agent!r} belongs on partition {expected} (Kafka's default "
                                     f"murmur2 partitioner), not {record.partition}")
        if self.ring is None:
            return None
        try:
            verify(self.ring, header(record.headers), record.value, "agent",
                   *agent_names(agent, intent.agent_role, intent.environment, intent.agent_owner))
        except TrustError as exc:
            return UNAUTHENTICATED, (f"{exc}: the intent must be signed with the credential of agent "
                                     f"{agent!r} as {intent.agent_role} in {intent.environment}")
        return None

    def check_internal(self, record: ConsumerRecord[Any, Any]) -> None:
        """Raise TrustError unless a worker sent this internal hop."""
        if self.ring is None:
            return
        verify(self.ring, header(record.headers), record.value, "internal")

    def verdict_signer(self, record: ConsumerRecord[Any, Any]) -> tuple[str, str] | None:
        """(kind, name) of who signed a verdict record (None: trust off); TrustError when unsigned or
        badly signed."""
        if self.ring is None:
            return None
        return verify_signed(self.ring, record.headers, record.value, VERDICT_SIGNERS)

    # -- out ------------------------------------------------------------------------------------------

    def seal(self, send: Send) -> list[tuple[str, bytes]]:
        """The headers of ``send``, with its authenticator."""
        headers = list(send.headers)
        if self.ring is None or self.signer is None:
            return headers
        route = send.route
        if route in (Route.DECISIONS, Route.REPLIES) and send.agent is not None:
            headers += [(AUTH_HEADER, authenticator(key_id, self.ring.derive(key_id, "agent", *send.agent),
                                                    send.value)) for key_id, _ in self.ring.keys]
        elif route in INTERNAL_ROUTES:
            key_id = self.ring.current
            headers.append((AUTH_HEADER, authenticator(key_id, self.ring.derive(key_id, "internal"),
                                                       send.value)))
        elif route in SIGNED_ROUTES:
            headers.append((AUTH_HEADER, self.signer.sign(send.value)))
        return headers

