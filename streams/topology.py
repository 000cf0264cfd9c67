"""The worker's topology: every topic it reads or writes, with its partitions and configs (created at
start), and the topic of each output route.

The public topics come from :class:`schemas.topics.TopicNames`. Three internal ones connect the stages
(:mod:`streams.stages.decide` has the design): ``<prefix>.internal.shared-limits`` (keyed by shared
window key) carries intents to the shared stage, ``<prefix>.internal.agent-feedback`` (keyed by agent
id, partitioned exactly like intents) brings the shared stage's and the approval stage's answers back to
the decide stage, and ``<prefix>.internal.approval-control`` (keyed by request id, partitioned exactly
like the approvals topic) carries opened approvals to the approval stage. Each stage's table has a
compacted changelog, ``<prefix>-worker-<table>-changelog``, co-partitioned with what the stage reads.

Every topic is created with the deployment's replication factor and ``min.insync.replicas``
(``SLUICEGATE_KAFKA_REPLICATION_FACTOR``, ``SLUICEGATE_KAFKA_MIN_INSYNC_REPLICAS``: 1 and 1 for the
local broker, 3 and 2 in production): with the workers' ``acks=all``, a decision or a limit's changelog
record is acknowledged only once that many replicas hold it.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.kafka.admin import MIN_INSYNC_REPLICAS, TopicSpec
from schemas.topics import TopicNames
from sluicegate.replies import DEFAULT_REPLY_PARTITIONS
from streams.policy_source import POLICIES_TOPIC
from streams.stages.outputs import Route
from streams.state.changelog_store import changelog_topic

COMPACTED = {"cleanup.policy": "compact"}
RESULTS = {"cleanup.policy": "compact,delete", "retention.ms": str(7 * 24 * 3_600_000)}
"""approval-results: one final per request id, kept a week (as long as the Slack bot remembers a post),
so reviewers' tools read a bounded topic."""
APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}
"""Intents carry the broker's time of arrival, which agents cannot set: the reference of the event-time
skew check (:class:`streams.stages.DecideStage`)."""


def worker_app_id(prefix: str) -> str:
    """The workers' app id: their one consumer group and the prefix of their changelog topics."""
    return f"{prefix}-worker"


@dataclass(frozen=True, slots=True)
class WorkerTopics:
    """Topic names of a worker: the public contract, the internal topics and the changelogs."""

    names: TopicNames
    partitions: int
    replication_factor: int = 1
    min_insync_replicas: int = 1
    reply_partitions: int = DEFAULT_REPLY_PARTITIONS
    """Of the replies topic, where decisions go when an intent names a reply key (docs/replies.md)."""

    @property
    def shared_limits(self) -> str:
        return f"{self.names.prefix}.internal.shared-limits"

    @property
    def agent_feedback(self) -> str:
        return f"{self.names.prefix}.internal.agent-feedback"

    @property
    def approval_control(self) -> str:
        return f"{self.names.prefix}.internal.approval-control"

    @property
    def agent_state_changelog(self) -> str:
        """The decide stage's table changelog (:mod:`streams.state.changelog_store`)."""
        return changelog_topic(worker_app_id(self.names.prefix), "agent-state")

    @property
    def shared_state_changelog(self) -> str:
        """The shared stage's table changelog."""
        return changelog_topic(worker_app_id(self.names.prefix), "shared-state")

    @property
    def approval_state_changelog(self) -> str:
        """The approval stage's table changelog."""
        return changelog_topic(worker_app_id(self.names.prefix), "approval-state")

    def routes(self) -> dict[Route, str]:
        """The topic of each output route."""
        n = self.names
        return {
            Route.DECISIONS: n.decisions, Route.REPLIES: n.replies, Route.AUDIT: n.audit,
            Route.SHARED: self.shared_limits,
            Route.FEEDBACK: self.agent_feedback, Route.DEAD_LETTER: n.dead_letter,
            Route.APPROVAL_REQUESTS: n.approval_requests, Route.APPROVAL_CONTROL: self.approval_control,
            Route.APPROVAL_RESULTS: n.approval_results,
        }

    def co_partitioned(self) -> list[TopicSpec]:
        """The topics the worker reads and its stages' changelogs: their partition N and the tables'
        partition N hold the same keys, so all of them must have ``partitions`` partitions."""
        n, p = self.names, self.partitions
        return [TopicSpec(name, p) for name in (n.intents, n.outcomes, n.approvals, self.shared_limits,
                                                self.agent_feedback, self.approval_control,
                                                self.agent_state_changelog, self.shared_state_changelog,
                                                self.approval_state_changelog)]

    def specs(self) -> list[TopicSpec]:
        """Every topic with its partitions, replication and configs (policies: one partition, kept
        forever)."""
        durable = {MIN_INSYNC_REPLICAS: str(self.min_insync_replicas)}
        return [TopicSpec(spec.name, spec.partitions, self.replication_factor, {**durable, **spec.configs})
                for spec in self._layout()]

    def _layout(self) -> list[TopicSpec]:
        n, p = self.names, self.partitions
        return [
            TopicSpec(n.intents, p, configs=dict(APPEND_TIME)), TopicSpec(n.decisions, p),
            TopicSpec(n.replies, self.reply_partitions),
            TopicSpec(n.reply_leases, 1, configs={**COMPACTED, **APPEND_TIME}),
            TopicSpec(n.approval_requests, p),
            TopicSpec(n.approvals, p, configs=dict(APPEND_TIME)),
            TopicSpec(n.approval_results, p, configs=dict(RESULTS)),
            TopicSpec(n.audit, p), TopicSpec(n.outcomes, p),
            TopicSpec(n.policies, 1, configs=dict(POLICIES_TOPIC)), TopicSpec(n.dead_letter, 1),
            TopicSpec(self.shared_limits, p), TopicSpec(self.agent_feedback, p),
            TopicSpec(self.approval_control, p),
            TopicSpec(self.agent_state_changelog, p, configs=dict(COMPACTED)),
            TopicSpec(self.shared_state_changelog, p, configs=dict(COMPACTED)),
            TopicSpec(self.approval_state_changelog, p, configs=dict(COMPACTED)),
        ]
