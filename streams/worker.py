"""Run a worker programmatically: ``python -m streams.worker --bootstrap HOST:PORT ...``.

Creates the topics (idempotently), builds the app and runs it under faust's Worker (SIGTERM/SIGINT
stop it cleanly; a SIGKILL loses nothing: the tables resume from their checkpoints and changelogs, and
uncommitted intents are redelivered and answered from their receipts). Defaults come from
:class:`sluicegate.settings.Settings`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

import faust
from pydantic import SecretStr

from infra.kafka.admin import ensure_topics, partition_mismatches, replication_shortfalls
from sluicegate.settings import PLAINTEXT, KafkaOptions, Settings
from sluicegate.trust import TrustError
from streams.app import WorkerConfig, build
from streams.stages.approval_machine import ApprovalError
from streams.topology import WorkerTopics, worker_app_id
from streams.upgrade import legacy_groups, upgrade

log = logging.getLogger(__name__)


def _seconds(text: str) -> float:
    """A non-negative number of seconds (argparse type)."""
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def config_from_args(argv: list[str] | None = None, settings: Settings | None = None) -> WorkerConfig:
    """Parse the command line; unset options fall back to the settings (env ``SLUICEGATE_*``)."""
    settings = settings or Settings()
    parser = argparse.ArgumentParser(prog="streams.worker", description=__doc__)
    parser.add_argument("--bootstrap", default=settings.bootstrap_servers)
    parser.add_argument("--topic-prefix", default=settings.topic_prefix)
    parser.add_argument("--partitions", type=int, default=settings.partitions)
    parser.add_argument("--workdir", type=Path, default=settings.state_dir / "worker")
    parser.add_argument("--web-port", type=int, default=6066)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--max-event-skew", type=_seconds, default=settings.max_event_skew_s,
                        help="seconds an intent's occurred_at may be from when it reached Kafka (0: any)")
    parser.add_argument("--reviewers", type=Path, default=settings.reviewers_file,
                        help="YAML of approver groups (groups: {name: [members]}); none: nobody approves")
    args = parser.parse_args(argv)
    return WorkerConfig(
        bootstrap=args.bootstrap, topic_prefix=args.topic_prefix, partitions=args.partitions,
        workdir=args.workdir, web_port=args.web_port, log_level=args.log_level,
        reviewers_file=args.reviewers, max_event_skew_s=args.max_event_skew,
        trust_keys=_secret(settings.trust_keys), trust_signing_key=_secret(settings.trust_signing_key),
        trust_off=settings.trust_off, kafka_options=settings.kafka_client_options(),
        replication_factor=settings.kafka_replication_factor,
        min_insync_replicas=settings.kafka_min_insync_replicas,
        reply_partitions=settings.reply_partitions,
    )


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


def run(config: WorkerConfig) -> None:
    """Create the topics, then run the worker until it is stopped (does not return normally)."""
    config.workdir.mkdir(parents=True, exist_ok=True)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        processor = build(config)
    except (ApprovalError, TrustError) as exc:
        raise SystemExit(f"streams.worker: {exc}") from exc
    if not processor.runner.trust.on:
        log.warning("trust is OFF (SLUICEGATE_TRUST_OFF): intents, verdicts and internal messages are taken "
                    "as they come; anyone who can produce to the topics can make a tool run")
    if config.reviewers_file is None:
        log.warning("no reviewers file (--reviewers / SLUICEGATE_REVIEWERS_FILE): nobody can approve, "
                    "every approval will be rejected or expire")
    loop.run_until_complete(prepare_topics(config, processor.topics))
    worker = faust.Worker(processor.app, loop=loop, loglevel=config.log_level, workdir=str(config.workdir),
                          redirect_stdouts=False)
    worker.execute_from_commandline()


async def prepare_topics(config: WorkerConfig, topics: WorkerTopics) -> None:
    """Create the missing topics; SystemExit naming what is wrong when an upgrade is due, or an existing
    topic has fewer replicas than configured or the wrong partition count."""
    bootstrap, options = config.bootstrap, config.kafka_options
    stale = await legacy_groups(bootstrap, config.app_id, options)
    if stale:
        raise SystemExit(f"streams.worker: {stale}")
    short = await replication_shortfalls(bootstrap, topics.specs(), options=options)
    if short:
        raise SystemExit(
            f"streams.worker: {'; '.join(short)}. SLUICEGATE_KAFKA_REPLICATION_FACTOR asks for more copies: "
            "losing a broker would lose decisions and reset limits. Add replicas to those topics "
            "(kafka-reassign-partitions) or lower the setting.")
    created = await ensure_topics(bootstrap, topics.specs(), options=options)
    if created:
        log.info("created topics: %s", ", ".join(created))
    wrong = await partition_mismatches(bootstrap, topics.co_partitioned(), options=options)
    if wrong:
        raise SystemExit(
            f"streams.worker: {'; '.join(wrong)}. The worker keeps its state per partition across the "
            "topics it reads and its tables' changelogs, so they must all have --partitions "
            "(SLUICEGATE_PARTITIONS) partitions: start it with their count, or recreate all of them.")


def run_upgrade(bootstrap: str, topic_prefix: str, options: KafkaOptions = PLAINTEXT) -> None:
    """Copy the per-stage groups' offsets into the worker's group (:mod:`streams.upgrade`) and say what."""
    copied = asyncio.run(upgrade(bootstrap, worker_app_id(topic_prefix), options))
    for tp, offset in sorted(copied.items()):
        print(f"{tp.topic}[{tp.partition}]: resumes at offset {offset}")
    print(f"upgraded: {len(copied)} partitions" if copied else "nothing to upgrade")


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    run(config_from_args(argv))


if __name__ == "__main__":
    main()
