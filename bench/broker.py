"""What the Kafka benchmarks share: a broker to run against, its clients' security options, and how they
print their figures."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infra.kafka import BrokerConfig, start_broker, stop_broker
from infra.kafka.process import free_port
from sluicegate.settings import Settings


def kafka_options() -> dict[str, Any]:
    """The security options of every Kafka client a benchmark makes: the ``SLUICEGATE_KAFKA_*`` settings, as
    every other client of sluicegate reads them (empty for PLAINTEXT). Its subprocesses (workers, floors,
    the sink) read the same settings from the environment they inherit."""
    return Settings().kafka_client_options()


BRING_YOUR_CLUSTER = ("pass --bootstrap (as a user the ACLs let do what the benchmark does, e.g. a super "
                      "user)")


def require_open_broker(settings: Settings, remedy: str = BRING_YOUR_CLUSTER) -> None:
    """A benchmark about to start its own broker (which is open, PLAINTEXT) stops if the settings name a
    security protocol: its clients would speak it to a broker that does not."""
    if settings.kafka_security_protocol != "PLAINTEXT":
        raise SystemExit(f"SLUICEGATE_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs a "
                         f"cluster that speaks it, and a broker the benchmark starts is PLAINTEXT: {remedy}")


@contextmanager
def bootstrap_servers(given: str | None, workdir: Path) -> Iterator[str]:
    """``given``, else a throwaway local broker (data under ``workdir``) for as long as the block runs."""
    if given:
        yield given
        return
    settings = Settings()
    require_open_broker(settings)
    broker = BrokerConfig(port=free_port(), data_dir=workdir / "kafka",
                          cache_dir=settings.artifact_cache_dir.resolve(), version=settings.kafka_version)
    start_broker(broker)
    try:
        yield f"127.0.0.1:{broker.port}"
    finally:
        stop_broker(broker.data_dir)


def report(result: dict[str, Any], as_json: bool) -> None:
    """One JSON line, or one ``name: value`` line per figure."""
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


Run = Callable[[argparse.Namespace, str, Path], Coroutine[Any, Any, dict[str, Any]]]
"""A benchmark: its arguments, the bootstrap servers and a scratch directory -> its figures."""


def main(doc: str, add_arguments: Callable[[argparse.ArgumentParser], None], run: Run) -> None:
    """The command line of a Kafka benchmark: ``--json``, ``--bootstrap`` (default
    ``KAFKA_BOOTSTRAP_SERVERS``, else a throwaway broker) and its own arguments."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    add_arguments(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluicegate-bench-") as tmp, \
            bootstrap_servers(args.bootstrap, Path(tmp)) as bootstrap:
        result = asyncio.run(run(args, bootstrap, Path(tmp)))
    report(result, args.json)
