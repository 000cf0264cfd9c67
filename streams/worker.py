"""Run a worker programmatically: ``python -m streams.worker --bootstrap HOST:PORT ...``.

Creates the topics (idempotently), builds the app and runs it under faust's Worker (SIGTERM/SIGINT
stop it cleanly; a SIGKILL loses nothing: uncommitted intents are redelivered and answered from state
restored from the changelogs). Defaults come from :class:`sluicegate.settings.Settings`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
from pathlib import Path

import faust

from infra.kafka.admin import TopicSpec, ensure_topics, partition_mismatches
from sluicegate.settings import Settings
from streams.app import WorkerConfig, build
from streams.stages.approval_machine import ApprovalError

log = logging.getLogger(__name__)
CLEAN_MARKER = "clean-shutdown"


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
    )


def discard_unclean_tables(workdir: Path, tabledir: Path) -> bool:
    """After a crash, drop the local table files so every table is rebuilt from its changelog.

    A killed worker's RocksDB can be *ahead* of its changelog (writes whose changelog records were
    still in the producer's buffer); faust would then replay the changelog tail over newer local
    values and, e.g., forget counted actions while keeping their idempotency records. The changelog
    alone is a consistent prefix (one partition, in order), so it is the state to resume from.
    Returns True when files were discarded.
    """
    marker = workdir / CLEAN_MARKER
    discard = tabledir.exists() and not marker.exists()
    if discard:
        log.warning("previous run did not stop cleanly: rebuilding tables from the changelogs")
        shutil.rmtree(tabledir)
    marker.unlink(missing_ok=True)
    return discard


def run(config: WorkerConfig) -> None:
    """Create the topics, then run the worker until it is stopped (does not return normally)."""
    config.workdir.mkdir(parents=True, exist_ok=True)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        processor = build(config)
    except ApprovalError as exc:
        raise SystemExit(f"streams.worker: {exc}") from exc
    if config.reviewers_file is None:
        log.warning("no reviewers file (--reviewers / SLUICEGATE_REVIEWERS_FILE): nobody can approve, "
                    "every approval will be rejected or expire")
    discard_unclean_tables(config.workdir, Path(processor.app.conf.tabledir))
    created = loop.run_until_complete(ensure_topics(config.bootstrap, processor.topics.specs()))
    if created:
        log.info("created topics: %s", ", ".join(created))
    changelogs = [TopicSpec(name, config.partitions) for name in processor.tables.changelog_topics()]
    wrong = loop.run_until_complete(
        partition_mismatches(config.bootstrap, [*processor.topics.co_partitioned(), *changelogs]))
    if wrong:
        raise SystemExit(
            f"streams.worker: {'; '.join(wrong)}. The worker keeps its state per partition across the "
            "topics it reads and its tables' changelogs, so they must all have --partitions "
            "(SLUICEGATE_PARTITIONS) partitions: start it with their count, or recreate all of them.")
    worker = faust.Worker(processor.app, loop=loop, loglevel=config.log_level, workdir=str(config.workdir),
                          redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code in (0, None):  # stopped cleanly: local tables match the changelogs
            (config.workdir / CLEAN_MARKER).touch()
        raise


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    run(config_from_args(argv))


if __name__ == "__main__":
    main()
