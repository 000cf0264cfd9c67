"""The audit sink on an embedded engine that refuses every DDL statement, as an insert-only user's server
does: ``SET allow_ddl = 0`` on the process's one chDB session (no statement can turn it back on), then
the production ``serve()`` on the same URL, until ``--rows`` rows are stored; prints its stats as JSON.

    python -m tests.consumers.insert_only_sink --url chdb:///dir --bootstrap HOST:PORT --topic-prefix P \
        --database D --rows 30 --migrations skip
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json

from consumers.audit_sink import AuditSink, SinkConfig, serve
from infra.clickhouse import open_client
from schemas import TopicNames


async def run(args: argparse.Namespace) -> None:
    open_client(args.url).command("SET allow_ddl = 0")
    config = SinkConfig(database=args.database, topics=TopicNames(args.topic_prefix),
                        group_id=args.topic_prefix, decoders=0, migrations=args.migrations)
    waiting: list[asyncio.Task[None]] = []

    def stop_when_stored(sink: AuditSink) -> None:
        async def wait() -> None:
            await sink.wait_stored(args.rows)
            sink.stop()

        waiting.append(asyncio.create_task(wait()))

    stats = await asyncio.wait_for(serve(args.url, args.bootstrap, config, on_ready=stop_when_stored), 120)
    print(json.dumps(dataclasses.asdict(stats)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("--url", "--bootstrap", "--topic-prefix", "--database", "--migrations"):
        parser.add_argument(name, required=True)
    parser.add_argument("--rows", type=int, required=True)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
