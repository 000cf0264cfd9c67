"""The audit sink as the chaos run starts it: the production sink (:func:`consumers.audit_sink.serve`)
whose store can be made unavailable from outside, the way the sink's tests inject it.

SIGUSR1 makes every insert fail (``ConnectionError``, before inserting) until SIGUSR2. The arguments
are the sink's own (``python bench/chaos_sink.py --url chdb:///... --bootstrap ... --topic-prefix ...``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from consumers.audit_sink import SinkConfig, _parse_args, serve
from infra.clickhouse import open_client
from schemas import TopicNames
from sluicegate.settings import Settings


class SwitchableStore:
    """The real client's inserts, failing while ``down``."""

    def __init__(self, client: Any) -> None:
        self.client, self.down = client, False

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise ConnectionError("ClickHouse is unavailable (injected by the chaos run)")
        return self.client.raw_insert(*args, **kwargs)


async def _serve(argv: list[str]) -> None:
    args = _parse_args(argv)
    config = SinkConfig(database=args.database, topics=TopicNames(args.topic_prefix), group_id=args.group,
                        max_rows=args.max_rows, max_delay_s=args.max_delay, decoders=args.decoders,
                        kafka_options=Settings().kafka_client_options())
    store = SwitchableStore(open_client(args.url))  # the same cached engine serve() opens
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, lambda: setattr(store, "down", True))
    loop.add_signal_handler(signal.SIGUSR2, lambda: setattr(store, "down", False))
    await serve(args.url, args.bootstrap, config, inserter=store)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(sys.argv[1:]))
