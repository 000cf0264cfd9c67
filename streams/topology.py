"""Every topic the worker reads or writes, with its partitions and configs, created at start (the
faust table's changelog is created by faust).

The public topics come from :class:`schemas.topics.TopicNames`; two internal ones carry the second
stage (see :mod:`streams.stages`): ``<prefix>.internal.shared-limits`` (keyed by shared window key)
and ``<prefix>.internal.agent-feedback`` (keyed by agent id, partitioned exactly like intents); a third,
``<prefix>.internal.approval-control`` (keyed by request id, partitioned exactly like the approvals
topic), carries opened approvals and timer ticks to the approval stage (:mod:`streams.stages.approval`).
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.kafka.admin import TopicSpec
from schemas.topics import TopicNames
from streams.state.changelog_store import changelog_topic

COMPACTED = {"cleanup.policy": "compact"}
APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}
"""Intents carry the broker's time of arrival, which agents cannot set: the reference of the event-time
skew check (:class:`streams.stages.DecideStage`)."""


def worker_app_id(prefix: str) -> str:
    """The workers' faust app id: their consumer group and the prefix of their changelog topics."""
    return f"{prefix}-worker"


@dataclass(frozen=True, slots=True)
class WorkerTopics:
    """Topic names of a worker: the public contract plus the internal stage-2 topics."""

    names: TopicNames
    partitions: int

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
        """Stage 1's table changelog (:mod:`streams.state.changelog_store`; faust's naming)."""
        return changelog_topic(worker_app_id(self.names.prefix), "agent-state")

    @property
    def shared_state_changelog(self) -> str:
        """Stage 2's table changelog."""
        return changelog_topic(worker_app_id(self.names.prefix), "shared-state")

    def co_partitioned(self) -> list[TopicSpec]:
        """The topics the worker reads and its stages' changelogs: their partition N and the tables'
        partition N hold the same keys, so all of them must have ``partitions`` partitions."""
        n, p = self.names, self.partitions
        return [TopicSpec(name, p) for name in (n.intents, n.approvals, self.shared_limits,
                                                self.agent_feedback, self.approval_control,
                                                self.agent_state_changelog, self.shared_state_changelog)]

    def specs(self) -> list[TopicSpec]:
        """Every topic with its partitions and configs (policies: one compacted partition)."""
        n, p = self.names, self.partitions
        return [
            TopicSpec(n.intents, p, configs=dict(APPEND_TIME)), TopicSpec(n.decisions, p),
            TopicSpec(n.approval_requests, p),
            TopicSpec(n.approvals, p), TopicSpec(n.approval_results, p, configs=dict(COMPACTED)),
            TopicSpec(n.audit, p), TopicSpec(n.outcomes, p),
            TopicSpec(n.policies, 1, configs=dict(COMPACTED)), TopicSpec(n.dead_letter, 1),
            TopicSpec(self.shared_limits, p), TopicSpec(self.agent_feedback, p),
            TopicSpec(self.approval_control, p),
            TopicSpec(self.agent_state_changelog, p, configs=dict(COMPACTED)),
            TopicSpec(self.shared_state_changelog, p, configs=dict(COMPACTED)),
        ]
