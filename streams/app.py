"""A worker, built from a :class:`WorkerConfig` (no module-level app, so tests and the CLI can build one
per prefix).

What faust-streaming does here: it is the application host. Its ``App`` and service tree start and stop
everything together (the runner is a dependency of the app), its web server serves ``/metrics``,
``/ready`` and ``/status`` (:mod:`streams.web`), its timers and tasks run the policy reader and the
reviewer-file reload, and ``faust.Worker`` is the process (signals, logging, a crash exits non-zero).
It consumes no records and holds no tables: its Kafka clients are switched off
(:class:`HostBootStrategy`), so it opens no broker connection and needs no Kafka credentials. Every
record path is the runner's (:mod:`streams.runtime.runner`, which says why and what it measured); every
Kafka client takes the deployment's security options (``WorkerConfig.kafka_options``).

Scaling: every worker of a deployment uses the same app id (``<prefix>-worker``), which is the one
Kafka consumer group of all the stages. Kafka spreads the partitions, and with them the tables, over
the running workers; a worker that dies has its partitions and their state (restored from the
changelog topics) taken over by the others. More partitions than workers leaves room to grow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import faust
from faust.app.base import BootStrategy

from schemas.topics import TopicNames
from sluicegate.replies import DEFAULT_REPLY_PARTITIONS
from sluicegate.settings import (
    DEFAULT_MAX_EVENT_SKEW_S,
    DEFAULT_PARTITIONS,
    DEFAULT_REPLICATION_FACTOR,
    DEFAULT_TOPIC_PREFIX,
    KafkaOptions,
)
from sluicegate.trust import KeyRing, RequestSigner, TrustError
from streams.audit_chain import chain_stages
from streams.metrics import Metrics
from streams.policy_source import PolicySource
from streams.redaction import Redactor
from streams.runtime.bindings import ApprovalBinding, DecideBinding, SharedBinding
from streams.runtime.outcomes import WithReports
from streams.runtime.runner import Runner
from streams.runtime.trust import WorkerTrust
from streams.stages.approval import ApprovalStage, Reviewers
from streams.stages.decide import DecideStage
from streams.stages.retention import DEFAULT_RETENTION_MS
from streams.stages.shared import SharedStage
from streams.state.changelog_seal import ChangelogSeal
from streams.state.changelog_store import ChangelogStore
from streams.topology import WorkerTopics, worker_app_id


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a worker needs to run."""

    bootstrap: str
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    partitions: int = DEFAULT_PARTITIONS
    workdir: Path = field(default_factory=lambda: Path.cwd() / ".state" / "worker")
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    retention_ms: int = DEFAULT_RETENTION_MS
    max_event_skew_s: float = DEFAULT_MAX_EVENT_SKEW_S
    log_level: str = "info"
    reviewers_file: Path | None = None
    trust_keys: str | None = field(default=None, repr=False)
    """The deployment's key ring (``SLUICEGATE_TRUST_KEYS``); None with ``trust_off`` only."""
    trust_signing_key: str | None = field(default=None, repr=False)
    """The Ed25519 key that signs approval requests (``SLUICEGATE_TRUST_SIGNING_KEY``)."""
    trust_off: bool = False
    """Run without credentials (``SLUICEGATE_TRUST_OFF``): a first local try, nothing is verified."""
    kafka_options: KafkaOptions = field(default_factory=dict, repr=False)
    """Every Kafka client's security options (:meth:`Settings.kafka_client_options`)."""
    replication_factor: int = DEFAULT_REPLICATION_FACTOR
    """Of every topic the worker creates; it refuses to start on topics with fewer replicas."""
    min_insync_replicas: int = 1
    reply_partitions: int = DEFAULT_REPLY_PARTITIONS
    """Of the replies topic (``SLUICEGATE_REPLY_PARTITIONS``, docs/replies.md)."""

    def trust(self) -> WorkerTrust:
        """The worker's trust: checks in, seals out. Raises TrustError when the keys are missing (and
        trust is not off) or unreadable."""
        if self.trust_keys is None and self.trust_signing_key is None:
            if not self.trust_off:
                raise TrustError("no keys: set SLUICEGATE_TRUST_KEYS and SLUICEGATE_TRUST_SIGNING_KEY "
                                 "(sluicegate trust init), or SLUICEGATE_TRUST_OFF=1 for a first local try")
            return WorkerTrust(None, None, self.partitions)
        ring = KeyRing.parse(self.trust_keys or "")
        signer = RequestSigner.parse(self.trust_signing_key or "")
        return WorkerTrust(ring, signer, self.partitions)

    @property
    def app_id(self) -> str:
        """The app id: the consumer group of every stage and the prefix of the changelog topics."""
        return worker_app_id(self.topic_prefix)

    @property
    def tabledir(self) -> Path:
        """Where the stages' tables live (one RocksDB database per table and partition)."""
        return self.workdir / "tables"


class HostBootStrategy(BootStrategy):
    """faust's services without its Kafka consumer, conductor, tables or producer: sensors, web, agents
    (none) and the app's own dependencies, timers and tasks."""

    enable_kafka = False


class HostApp(faust.App):
    """The faust app as the worker's host (:class:`HostBootStrategy`)."""

    BootStrategy = HostBootStrategy


@dataclass(slots=True)
class Processor:
    """Everything a running worker holds."""

    config: WorkerConfig
    app: faust.App
    topics: WorkerTopics
    metrics: Metrics
    policies: PolicySource
    decide_stage: DecideStage
    shared_stage: SharedStage
    approval_stage: ApprovalStage
    runner: Runner


def make_host_app(config: WorkerConfig) -> faust.App:
    """The faust app: web server for the pages, no Kafka clients of its own."""
    return HostApp(
        config.app_id, broker=f"kafka://{config.bootstrap}", datadir=str(config.workdir),
        autodiscover=False, web_enabled=True, web_port=config.web_port, web_bind=config.web_host,
        web_host=config.web_host,
    )


def build(config: WorkerConfig) -> Processor:
    """Build the host app, the stages and their runner, the policy source and the pages.

    Raises :class:`streams.stages.approval_machine.ApprovalError` when the reviewers file cannot be read,
    :class:`sluicegate.trust.TrustError` when the keys are missing or unreadable.
    """
    from streams.web import register  # the pages need the built Processor

    app = make_host_app(config)
    topics = WorkerTopics(TopicNames(config.topic_prefix), config.partitions, config.replication_factor,
                          config.min_insync_replicas, config.reply_partitions)
    metrics = Metrics()
    trust = config.trust()
    policies = PolicySource(config.bootstrap, topics.names.policies, metrics, trust.ring, topics.names.audit,
                            options=config.kafka_options)
    runner, stages = build_runner(config, topics, policies, metrics, trust)
    app.add_dependency(runner)
    processor = Processor(config, app, topics, metrics, policies, *stages, runner)
    register(processor)
    return processor


def build_runner(
    config: WorkerConfig, topics: WorkerTopics, policies: PolicySource, metrics: Metrics, trust: WorkerTrust,
) -> tuple[Runner, tuple[DecideStage, SharedStage, ApprovalStage]]:
    """The three stages over their tables, and the runner that drives them."""
    n = topics.names
    skew_ms = round(config.max_event_skew_s * 1000) if config.max_event_skew_s else None
    agent_state = _store(config, topics.agent_state_changelog, trust)
    shared_state = _store(config, topics.shared_state_changelog, trust)
    approval_state = _store(config, topics.approval_state_changelog, trust)
    decide_stage = DecideStage(agent_state, config.retention_ms, skew_ms)
    shared_stage = SharedStage(shared_state, config.retention_ms)
    approval_stage = ApprovalStage(approval_state, Reviewers(config.reviewers_file), config.retention_ms)
    bindings = (
        WithReports(DecideBinding(decide_stage, agent_state, n.intents, topics.agent_feedback, policies,
                                  metrics, trust), n.outcomes, trust),
        SharedBinding(shared_stage, shared_state, topics.shared_limits, policies, metrics, trust),
        ApprovalBinding(approval_stage, approval_state, n.approvals, topics.approval_control, trust),
    )
    chained = chain_stages(bindings, trust.signer, Redactor(policies, trust.ring))  # docs/audit.md
    runner = Runner(config.bootstrap, config.app_id, chained, topics.routes(), policies, trust,
                    config.kafka_options)
    return runner, (decide_stage, shared_stage, approval_stage)


def _store(config: WorkerConfig, changelog: str, trust: WorkerTrust) -> ChangelogStore:
    """A table's store, in a directory named after its changelog topic (its records sealed when trust
    is on)."""
    seal = None if trust.ring is None else ChangelogSeal(trust.ring)
    return ChangelogStore(config.tabledir / changelog, changelog, seal)
