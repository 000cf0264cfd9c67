"""Topic names and keys: the Kafka half of the wire contract, shared by SDK, processor and consumers.

| topic              | key        | value                | notes                                      |
|--------------------|------------|----------------------|--------------------------------------------|
| intents            | agent_id   | Intent JSON          | partitioned by agent                       |
| decisions          | agent_id   | Decision JSON        | same key and partition count as intents,   |
|                    |            |                      | so an agent reads only its own partition   |
| replies            | reply_key  | Decision JSON        | decisions of intents naming a reply_key    |
|                    |            |                      | (docs/replies.md)                          |
| reply-leases       | partition/ | ReplyLeaseClaim JSON | compacted; which agent processes read      |
|                    | holder     |                      | which replies partition                    |
| approval-requests  | request_id | ApprovalRequest JSON | read by the Slack bot and the CLI          |
| approvals          | request_id | ApprovalVerdict JSON | the reviewer topic                         |
| approval-results   | request_id | Decision JSON        | compacted; the final decision of each      |
|                    |            |                      | approval (read by the Slack bot and CLI)   |
| audit              | request_id | AuditRecord JSON     | written by workers only; stored in         |
|                    |            |                      | ClickHouse by the audit sink               |
| outcomes           | agent_id   | ExecutionOutcome or  | agents' reports (signed: sg-auth, sg-agent,|
|                    |            | AuditRecord JSON     | :mod:`sluicegate.reports`); a worker       |
|                    |            |                      | verifies them and writes them to the audit |
| policies           | "active"   | policy YAML text     | kept forever; the last valid one is in     |
|                    |            |                      | force (signed by a publisher, trust on)    |
| dead-letter        | original   | original bytes       | headers: :func:`dead_letter_headers`       |
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_ERROR_BYTES = 4000
"""A dead letter's ``error`` header is cut to this."""

ACTIVE_POLICY_KEY = b"active"
"""Key of the live policy on the policies topic."""


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Every topic name, under one configurable prefix."""

    prefix: str = "sluicegate"

    def _name(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    @property
    def intents(self) -> str:
        return self._name("intents")

    @property
    def decisions(self) -> str:
        return self._name("decisions")

    @property
    def replies(self) -> str:
        return self._name("replies")

    @property
    def reply_leases(self) -> str:
        return self._name("reply-leases")

    @property
    def approval_requests(self) -> str:
        return self._name("approval-requests")

    @property
    def approvals(self) -> str:
        return self._name("approvals")

    @property
    def approval_results(self) -> str:
        return self._name("approval-results")

    @property
    def audit(self) -> str:
        return self._name("audit")

    @property
    def outcomes(self) -> str:
        return self._name("outcomes")

    @property
    def policies(self) -> str:
        return self._name("policies")

    @property
    def dead_letter(self) -> str:
        return self._name("dead-letter")


def dead_letter_headers(
    error: str, topic: str | None = None, partition: int | None = None, offset: int | None = None,
    size: int | None = None,
) -> list[tuple[str, bytes]]:
    """The headers of a dead letter, the same from every producer: ``error`` (why, cut to
    :data:`MAX_ERROR_BYTES`), where it came from (``source_topic``, ``source_partition``,
    ``source_offset``) when known, and its original ``size`` when the value was cut."""
    headers = [("error", error.encode()[:MAX_ERROR_BYTES])]
    for name, value in (("source_topic", topic), ("source_partition", partition), ("source_offset", offset),
                        ("size", size)):
        if value is not None:
            headers.append((name, str(value).encode()))
    return headers
