"""What the Kafka benchmarks share: a broker to run against, and how they print their figures."""

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


@contextmanager
def bootstrap_servers(given: str | None, workdir: Path) -> Iterator[str]:
    """``given``, else a throwaway local broker (data under ``workdir``) for as long as the block runs."""
    if given:
        yield given
        return
    settings = Settings()
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
