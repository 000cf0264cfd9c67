"""A simulated reviewer: answers approval requests the way a busy on-call team would."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import ValidationError

from schemas import ApprovalRequest, ApprovalVerdict, TopicNames, VerdictKind

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


class SimulatedReviewer:
    """Approves most requests after a short think, denies some with a reason."""

    def __init__(self, bootstrap: str, topics: TopicNames, seed: int = 11, deny_share: float = 0.2) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self._rng = random.Random(seed)
        self._deny_share = deny_share
        self.verdicts: Counter[VerdictKind] = Counter()

    async def run(self, started: asyncio.Event) -> None:
        """Answer requests until cancelled; `started` is set once it reads the request topic."""
        consumer = AIOKafkaConsumer(
            self._topics.approval_requests,
            bootstrap_servers=self._bootstrap,
            auto_offset_reset="latest",
            enable_auto_commit=False,
        )
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all")
        await consumer.start()
        await producer.start()
        try:
            await consumer.seek_to_end()
            started.set()
            pending: set[asyncio.Task[None]] = set()
            async for record in consumer:
                try:
                    request = ApprovalRequest.model_validate_json(record.value or b"")
                except ValidationError:
                    continue
                task = asyncio.create_task(self._answer(producer, request))
                pending.add(task)
                task.add_done_callback(pending.discard)
        finally:
            await consumer.stop()
            await producer.stop()

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
            await producer.send_and_wait(self._topics.approvals, verdict.model_dump_json().encode(), key=key)
            self.verdicts[verdict.verdict] += 1
