"""``sluicegate worker``: run one stream-processing worker (several share the partitions)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr

from sluicegate.cli.extras import require
from sluicegate.settings import Settings


def worker_command(
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Table state (RocksDB) (default: <state_dir>/worker).")
    ] = None,
    web_port: Annotated[int, typer.Option("--web-port", help="Port of /metrics and /ready.")] = 6066,
    partitions: Annotated[
        int | None, typer.Option("--partitions", help="Partitions of new topics (default: settings).")
    ] = None,
    bootstrap: Annotated[
        str | None, typer.Option("--bootstrap", help="Kafka bootstrap servers (default: settings).")
    ] = None,
    topic_prefix: Annotated[str | None, typer.Option("--topic-prefix", help="(default: settings)")] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
    upgrade: Annotated[
        bool, typer.Option("--upgrade", help=(
            "With every worker stopped: move the per-stage consumer groups' offsets of an older "
            "release into the worker's group, then exit.")),
    ] = False,
    max_event_skew: Annotated[
        float | None, typer.Option(
            "--max-event-skew", min=0,
            help="Seconds an intent's occurred_at may be from when it reached Kafka; 0: any "
                 "(default: settings)."),
    ] = None,
) -> None:
    """Run a worker: decide intents until stopped (Ctrl-C / SIGTERM).

    Start the same command on several machines (same topic prefix): Kafka's consumer group shares the
    partitions between them and moves a dead worker's partitions, with their state, to the others.
    """
    with require("worker", command="worker"):
        from streams.app import WorkerConfig
        from streams.worker import run, run_upgrade

    settings = Settings()
    if upgrade:
        run_upgrade(bootstrap or settings.bootstrap_servers, topic_prefix or settings.topic_prefix,
                    settings.kafka_client_options())
        return
    run(WorkerConfig(
        bootstrap=bootstrap or settings.bootstrap_servers,
        topic_prefix=topic_prefix or settings.topic_prefix,
        partitions=partitions or settings.partitions,
        workdir=workdir or settings.state_dir / "worker",
        web_port=web_port, log_level=log_level,
        max_event_skew_s=settings.max_event_skew_s if max_event_skew is None else max_event_skew,
        reviewers_file=settings.reviewers_file,
        trust_keys=_secret(settings.trust_keys), trust_signing_key=_secret(settings.trust_signing_key),
        trust_off=settings.trust_off, kafka_options=settings.kafka_client_options(),
        replication_factor=settings.kafka_replication_factor,
        min_insync_replicas=settings.kafka_min_insync_replicas,
        reply_partitions=settings.reply_partitions,
    ))


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()
