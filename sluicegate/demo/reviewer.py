"""A simulated reviewer: answers approval requests the way a busy on-call team would.

With trust on it behaves as the approvals CLI does: it answers only requests signed by the workers
(their Ed25519 public key) whose digest matches the intent shown, and signs each verdict with the
credential of the reviewer it names.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import ValidationError

from schemas import ApprovalRequest, ApprovalVerdict, TopicNames, VerdictKind
from sluicegate.settings import PLAINTEXT, KafkaOptions
from sluicegate.trust import KeyRing, SignerCredential, TrustError, verify_request

log = logging.getLogger(__name__)

REVIEWER_GROUPS: dict[str, list[str]] = {
    "support-leads": ["lena", "marco"],
    "on-call": ["priya", "tomas"],
    "finance-reviewers": ["chen", "amara"],
    "data-owners": ["ines", "olu"],
    "reviewers": ["lena", "priya", "chen", "ines"],
}
"""Who may approve what in the demo; the worker reads the same groups from its reviewers file."""


def reviewers_yaml() -> str:
    """The reviewers file the demo's worker loads (``groups: {name: [reviewer, ...]}``)."""
    lines = ["groups:"]
    lines += [f"  {group}: [{', '.join(members)}]" for group, members in REVIEWER_GROUPS.items()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class ReviewerTrust:
    """What the simulated reviewers verify requests with and sign verdicts with."""

    public_key: str
    credentials: Mapping[str, SignerCredential]

    @classmethod
    def issue(cls, ring: KeyRing, public_key: str) -> ReviewerTrust:
        """A reviewer credential for everyone in :data:`REVIEWER_GROUPS`."""
        names = {name for members in REVIEWER_GROUPS.values() for name in members}
        return cls(public_key, {name: SignerCredential.issue(ring, "reviewer", name) for name in names})


class SimulatedReviewer:
    """Approves most requests after a short think, denies some with a reason.

    ``trust``: None answers every request unsigned (workers with trust off).
    """

    def __init__(self, bootstrap: str, topics: TopicNames, seed: int = 11, deny_share: float = 0.2,
                 trust: ReviewerTrust | None = None, options: KafkaOptions = PLAINTEXT) -> None:
        self._bootstrap, self._options = bootstrap, options
        self._topics = topics
        self._rng = random.Random(seed)
        self._deny_share = deny_share
        self._trust = trust
        self.verdicts: Counter[VerdictKind] = Counter()
        self.refused = 0
        """Requests not answered because they did not verify."""

    async def run(self, started: asyncio.Event) -> None:
        """Answer requests until cancelled; `started` is set once it reads the request topic."""
        consumer = AIOKafkaConsumer(
            self._topics.approval_requests,
            bootstrap_servers=self._bootstrap,
            auto_offset_reset="latest",
            enable_auto_commit=False,
            **self._options,
        )
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all", **self._options)
        await consumer.start()
        await producer.start()
        try:
            await consumer.seek_to_end()
            started.set()
            pending: set[asyncio.Task[None]] = set()
            async for record in consumer:
                try:
                    request = ApprovalRequest.model_validate_json(record.value or b"")
                    self._verify(request, record.headers, record.value or b"")
                except ValidationError:
                    continue
                except TrustError as exc:
                    self.refused += 1
                    log.error("not answering approval request %s: %s", record.key, exc)
                    continue
                task = asyncio.create_task(self._answer(producer, request))
                pending.add(task)
                task.add_done_callback(pending.discard)
        finally:
            await consumer.stop()
            await producer.stop()

    def _verify(self, request: ApprovalRequest, headers: object, value: bytes) -> None:
        """TrustError unless the workers signed the request and its digest is the intent's."""
        if self._trust is None:
            return
        verify_request(self._trust.public_key, headers, value)
        if request.intent.digest() != request.intent_digest:
            raise TrustError("the digest is not the intent's")

    async def _answer(self, producer: AIOKafkaProducer, request: ApprovalRequest) -> None:
        await asyncio.sleep(self._rng.uniform(0.3, 2.5))
        members = REVIEWER_GROUPS.get(request.approver_group, REVIEWER_GROUPS["reviewers"])
        deny = self._rng.random() < self._deny_share
        reviewers = members[:1] if deny else members[: request.quorum]
        for reviewer in reviewers:
            verdict = ApprovalVerdict(
                request_id=request.request_id,
                intent_digest=request.intent_digest,
                reviewer=reviewer,
                verdict=VerdictKind.DENY if deny else VerdictKind.APPROVE,
                reason="not without a ticket reference" if deny else None,
                source="api",
                decided_at=datetime.now(UTC),
            )
            key = str(request.request_id).encode()
            value = verdict.model_dump_json().encode()
            credential = self._trust.credentials.get(reviewer) if self._trust is not None else None
            headers = credential.headers(value) if credential is not None else None
            await producer.send_and_wait(self._topics.approvals, value, key=key, headers=headers)
            self.verdicts[verdict.verdict] += 1
