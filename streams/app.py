"""A worker, built from a :class:`WorkerConfig` (no module-level app, so tests and the CLI can build
one per prefix): the two deciding stages on :mod:`streams.runtime.runner` (stage 1: intents; stage 2: the
shared-limit hops), and a faust app for approvals, timers and web pages, all on one event loop and
started and stopped together (the runners are dependencies of the app).

Scaling: every worker of a deployment uses the same app id (``<prefix>-worker``), i.e. the same three
Kafka consumer groups: ``<prefix>-worker-decide`` (intents and agent feedback), ``<prefix>-worker-shared``
(shared limits) and ``<prefix>-worker`` (faust: approvals). Kafka spreads the partitions, and with them
the tables, over the running workers; a worker that dies has its partitions and their state (restored
from the changelog topics) taken over by the others. More partitions than workers leaves room to grow.

Latency tuning. The deciding stages run without faust's per-message layers (why, and what it
measured: :mod:`streams.runtime.runner`). For the faust side, see :data:`LATENCY_SETTINGS`: sending through
the transport producer instead of faust's ``Topic.send`` layer, the Kafka clients' per-message debug
logging off, ``producer_linger=0``, a short commit interval, and faust's hard-coded 1.5 s fetch wait
cut to 100 ms (:mod:`streams.fetch_wait`), which stalled records behind fetches of idle partitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust

from schemas.topics import TopicNames
from sluicegate.settings import DEFAULT_MAX_EVENT_SKEW_S, DEFAULT_PARTITIONS, DEFAULT_TOPIC_PREFIX
from streams.fetch_wait import shorten_fetch_wait
from streams.flow_control import WorkerApp
from streams.handlers import agent_handler, shared_handler
from streams.metrics import Metrics
from streams.policy_source import PolicySource
from streams.rewind import rewind_uncommitted
from streams.runtime.runner import StageRunner, StageTopics
from streams.stages.approval import ApprovalStage, Reviewers
from streams.stages.decide import DecideStage
from streams.stages.outputs import Route
from streams.stages.retention import DEFAULT_RETENTION_MS
from streams.stages.shared import SharedStage
from streams.state.changelog_store import ChangelogStore
from streams.tables import Tables, make_tables
from streams.topology import WorkerTopics, worker_app_id

LATENCY_SETTINGS: dict[str, Any] = {
    # Commit offsets often: a commit flushes the producer, and the offsets bound the redelivery after
    # a crash. Cheap at this size; the default (2.8 s / 10k messages) mostly matters for restarts.
    "broker_commit_interval": 0.5,
    "broker_commit_every": 2_000,
    # Send decisions at once: aiokafka's linger batches for throughput at the price of latency.
    "producer_linger": 0.0,
    # Every in-sync replica acknowledges: a decision (and the changelog record behind a limit) survives
    # a leader failover. On a single broker this costs nothing over acks=1.
    "producer_acks": -1,
    "producer_max_batch_size": 64 * 1024,
    # A deep buffer keeps the single deciding actor busy while the fetcher works ahead.
    "stream_buffer_maxsize": 16_384,
    # Redelivered intents are answered from their idempotency record: no need to drain on rebalance.
    "stream_wait_empty": False,
    # Notice a dead worker within seconds (the broker's minimum session timeout is 6 s).
    "broker_session_timeout": 6.0,
    "broker_heartbeat_interval": 1.0,
    "broker_rebalance_timeout": 10.0,
    "broker_request_timeout": 30.0,
}


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

    @property
    def app_id(self) -> str:
        """The faust app id: the consumer group and the changelog topics' prefix."""
        return worker_app_id(self.topic_prefix)


@dataclass(slots=True)
class Processor:
    """Everything a running worker holds."""

    config: WorkerConfig
    app: faust.App
    topics: WorkerTopics
    channels: dict[str, Any]
    tables: Tables
    metrics: Metrics
    policies: PolicySource
    decide_stage: DecideStage
    shared_stage: SharedStage
    approval_stage: ApprovalStage
    routes: dict[Route, str]
    """The topic of each route."""
    runners: tuple[StageRunner, ...]
    """Stage 1 and stage 2 (:mod:`streams.runtime.runner`)."""


def make_faust_app(config: WorkerConfig) -> faust.App:
    """The faust app with our settings (rocksdict tables under the workdir, web server for metrics)."""
    return WorkerApp(
        config.app_id,
        broker=f"kafka://{config.bootstrap}",
        store="rocksdb://",  # faust's RocksDB store, backed by rocksdict
        datadir=str(config.workdir),
        autodiscover=False,
        topic_partitions=config.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_port=config.web_port,
        web_bind=config.web_host,
        web_host=config.web_host,
        **LATENCY_SETTINGS,
    )


ROUTES = {
    Route.DECISIONS: "decisions", Route.AUDIT: "audit", Route.SHARED: "shared",
    Route.FEEDBACK: "feedback", Route.DEAD_LETTER: "dead_letter",
    Route.APPROVAL_REQUESTS: "approval_requests", Route.APPROVAL_CONTROL: "approval_control",
}
"""The channel of each route."""


def _channels(app: faust.App, topics: WorkerTopics) -> dict[str, Any]:
    """faust topic objects (raw bytes in and out; we parse with pydantic ourselves)."""

    def topic(*names: str) -> Any:
        return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw", partitions=topics.partitions)

    n = topics.names
    return {
        "approvals_in": topic(n.approvals, topics.approval_control),
        "decisions": topic(n.decisions),
        "audit": topic(n.audit),
        "shared": topic(topics.shared_limits),
        "feedback": topic(topics.agent_feedback),
        "dead_letter": topic(n.dead_letter),
        "approval_requests": topic(n.approval_requests),
        "approval_control": topic(topics.approval_control),
    }


def build(config: WorkerConfig) -> Processor:
    """Build the app, its topics, tables, stages, policy source, metrics and agents.

    Raises :class:`streams.stages.approval_machine.ApprovalError` when the reviewers file cannot be read.
    """
    from streams.agents import register  # the agents need the built Processor

    app = make_faust_app(config)
    topics = WorkerTopics(TopicNames(config.topic_prefix), config.partitions)
    n = topics.names
    tables = make_tables(app, config.partitions)
    metrics = Metrics()
    channels = _channels(app, topics)
    routes = {route: channels[name].get_topic_name() for route, name in ROUTES.items()}
    policies = PolicySource(config.bootstrap, n.policies, metrics)
    # The stages' tables live beside faust's, so they are discarded with them after a crash
    # (see :func:`streams.worker.discard_unclean_tables`).
    tabledir = Path(app.conf.tabledir)
    agent_store = ChangelogStore(tabledir / "agent-state", topics.agent_state_changelog)
    shared_store = ChangelogStore(tabledir / "shared-state", topics.shared_state_changelog)
    decide_stage = DecideStage(agent_store, config.retention_ms,
                             round(config.max_event_skew_s * 1000) if config.max_event_skew_s else None)
    shared_stage = SharedStage(shared_store, config.retention_ms)
    runners = (
        StageRunner("decide", config.bootstrap, f"{config.app_id}-decide",
                    StageTopics((n.intents, topics.agent_feedback), topics.agent_state_changelog, routes),
                    agent_handler(decide_stage, n.intents, policies, metrics), agent_store,
                    decide_stage.retention, policies, legacy_group=config.app_id),
        StageRunner("shared", config.bootstrap, f"{config.app_id}-shared",
                    StageTopics((topics.shared_limits,), topics.shared_state_changelog, routes),
                    shared_handler(shared_stage, policies, metrics), shared_store,
                    shared_stage.retention, policies, legacy_group=config.app_id),
    )
    processor = Processor(
        config=config, app=app, topics=topics, channels=channels, tables=tables, metrics=metrics,
        policies=policies, decide_stage=decide_stage, shared_stage=shared_stage,
        approval_stage=ApprovalStage(tables.approval_state, Reviewers(config.reviewers_file),
                                     config.retention_ms),
        routes=routes, runners=runners,
    )
    shorten_fetch_wait()
    rewind_uncommitted(app, {n.approvals, topics.approval_control})
    for runner in runners:
        app.add_dependency(runner)
    register(processor)
    return processor
