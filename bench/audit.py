"""Audit benchmarks: sink throughput, audit lag at 1,000 decisions/s, report and backtest speed, each
beside its floor measured in the same run.

``python bench/audit.py --json`` prints one JSON line with ``sink_rows_per_s``, ``lag_p99_s``,
``report_s`` (over ``--report-rows`` rows generated inside ClickHouse) and ``backtest_per_s``: the best
of ``--repeat`` passes (the machine is shared), every pass in ``*_passes``, and the 1-minute load
average when each figure was taken in ``load``. The sink's clock starts once its group has assigned
it the partitions of the pre-filled topic and its decoder processes are up: it measures throughput,
not the group join. Starts its own broker (Kafka port 19500-19599) unless ``--bootstrap`` is given;
uses a fresh chDB path.

Floors, alternating with the passes they bound: ``floor_rows_per_s``, the same rows already decoded
(row tuples) inserted straight with clickhouse-connect into the same engine in the sink's batch size
(``arrow_floor_rows_per_s``: the same rows as a ready Arrow stream, the engine's own insert cost);
``backtest_floor_per_s``, the same intents, already in memory, replayed through the engine without
ClickHouse. ``sink_vs_floor`` and ``backtest_vs_floor`` are the medians of the per-pass ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.broker import kafka_options, require_open_broker
from consumers.analytics import build_report
from consumers.audit_columns import COLUMNS, row
from consumers.audit_rows import arrow_stream, to_arrow
from consumers.audit_sink import DEFAULT_MAX_ROWS, AuditSink, SinkConfig, open_sink
from consumers.audit_store import ClientStore
from consumers.backtest import audited_intents, backtest, replay
from infra.clickhouse import open_client
from infra.clickhouse.migrate import migrate
from infra.kafka import BrokerConfig, start_broker, stop_broker
from infra.kafka.admin import TopicSpec, ensure_topics
from infra.kafka.process import port_is_free
from schemas import AuditRecord, DecisionKind, TopicNames
from sluicegate.settings import Settings
from streams.engine import load_policy
from tests.consumers.records import decision_record, intent

POLICY = Path(__file__).resolve().parents[1] / "policies" / "examples" / "customer_support.yaml"


def _payloads(count: int, at: datetime) -> list[tuple[bytes, bytes]]:
    out = []
    for index in range(count):
        asked = intent(at, agent=f"agent-{index % 50}", amount=index % 700)
        record = decision_record(asked, DecisionKind.ALLOW)
        out.append((str(record.request_id).encode(), record.model_dump_json().encode()))
    return out


async def create_topics(bootstrap: str, topics: TopicNames, partitions: int = 3) -> None:
    """The sink's topics (audit, outcomes, dead letters)."""
    names = (topics.audit, topics.outcomes, topics.dead_letter)
    await ensure_topics(bootstrap, [TopicSpec(name, partitions) for name in names], options=kafka_options())


def sink_config(database: str, topics: TopicNames) -> SinkConfig:
    """The sink under measurement, with the settings' Kafka security."""
    return SinkConfig(database=database, topics=topics, group_id=database, kafka_options=kafka_options())


async def _running(bootstrap: str, client: Any, config: SinkConfig) -> tuple[AuditSink, asyncio.Task[None]]:
    sink = await open_sink(bootstrap, client, config)
    return sink, asyncio.create_task(sink.run())


async def _stop(sink: AuditSink, task: asyncio.Task[None]) -> None:
    sink.stop()
    await task
    await sink.close()


async def _assigned(consumer: AIOKafkaConsumer) -> None:
    """Wait until the group gave the consumer its partitions (the clock starts after the join)."""
    while not consumer.assignment():
        await asyncio.sleep(0.01)


def _decoded(payloads: list[tuple[bytes, bytes]], topic: str) -> list[tuple[Any, ...]]:
    """The rows the sink stores for ``payloads``, decoded beforehand (the floor's input)."""
    return [row(AuditRecord.model_validate_json(value), (topic, 0, offset))
            for offset, (_, value) in enumerate(payloads)]


def insert_floor(client: Any, rows: list[tuple[Any, ...]], batch: int) -> tuple[float, float]:
    """Rows per second of clickhouse-connect inserts of decoded ``rows`` into a fresh ``audit_events``,
    ``batch`` rows per insert: as row tuples, and as a ready Arrow stream (``raw_insert``)."""
    rates = []
    for arrow in (False, True):
        db = "floor" + secrets.token_hex(4)
        migrate(client, db)
        chunks = [rows[i:i + batch] for i in range(0, len(rows), batch)]
        streams = [arrow_stream([to_arrow(chunk)]) for chunk in chunks] if arrow else []
        started = time.perf_counter()
        for index, chunk in enumerate(chunks):
            if arrow:
                client.raw_insert(f"{db}.audit_events", list(COLUMNS), streams[index], fmt="ArrowStream")
            else:
                client.insert(f"{db}.audit_events", chunk, column_names=list(COLUMNS))
        rates.append(len(rows) / (time.perf_counter() - started))
    return rates[0], rates[1]


async def sink_throughput(bootstrap: str, client: Any, rows: int) -> float:
    """Rows per second stored from a pre-filled topic."""
    topics = TopicNames("bench" + secrets.token_hex(4))
    await create_topics(bootstrap, topics)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20,
                                **kafka_options())
    await producer.start()
    for key, value in _payloads(rows, datetime.now(UTC)):
        await producer.send(topics.audit, value, key=key)
    await producer.flush()
    await producer.stop()
    db = topics.prefix
    migrate(client, db)
    sink, task = await _running(bootstrap, client, sink_config(db, topics))
    await _assigned(sink.consumer)
    started = time.perf_counter()
    await sink.wait_stored(rows)
    elapsed = time.perf_counter() - started
    await _stop(sink, task)
    return rows / elapsed


async def lag_p99(bootstrap: str, client: Any, rate: int, seconds: int) -> float:
    """p99 of (row ingested) - (decision made) while producing ``rate`` decisions per second."""
    topics = TopicNames("lag" + secrets.token_hex(4))
    await create_topics(bootstrap, topics)
    db = topics.prefix
    migrate(client, db)
    sink, task = await _running(bootstrap, client, sink_config(db, topics))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **kafka_options())
    await producer.start()
    start = time.monotonic()
    for tick in range(rate * seconds // 100):
        for key, value in _payloads(100, datetime.now(UTC)):
            await producer.send(topics.audit, value, key=key)
        await asyncio.sleep(max(0.0, start + (tick + 1) * 100 / rate - time.monotonic()))
    await producer.flush()
    await producer.stop()
    await sink.wait_stored(rate * seconds // 100 * 100)
    await _stop(sink, task)
    lag = client.command(f"SELECT quantileExact(0.99)(dateDiff('millisecond', event_time, ingested_at)) "
                         f"FROM {db}.audit_events")
    return int(str(lag)) / 1000


GENERATE = """
INSERT INTO {db}.audit_events (event_id, event_type, event_time, request_id, agent_id, agent_role,
    environment, tool, action, target, params, occurred_at, policy_version, decision, decision_final,
    reasons, rules,
    risk_score, risk_factors)
SELECT toString(number), 'decision', now64(3) - toIntervalMillisecond(number * 8 % 86400000),
    generateUUIDv4(),
    concat('agent-', toString(number % 200)), 'support', 'production',
    ['payments.refund', 'crm.get_account', 'tickets.create', 'crm.export_customers'][number % 4 + 1],
    ['create', 'read', 'create', 'read'][number % 4 + 1],
    ['payments:refunds', 'crm:accounts', 'helpdesk:tickets', 'crm:accounts'][number % 4 + 1],
    concat('{{"amount":', toString(number % 700), '}}'),
    now64(3) - toIntervalMillisecond(number * 8 % 86400000),
    'sha256:0123456789abcdef', ['ALLOW', 'ALLOW', 'BLOCK', 'REQUIRE_APPROVAL'][number % 4 + 1], true,
    ['bench'], ['r1'], (number % 100) / 100, map('action_type', 0.1, 'amount_deviation', (number % 10) / 10)
FROM numbers({rows})
"""


def report_seconds(client: Any, rows: int, repeat: int) -> list[float]:
    """Seconds for the full 24h report over ``rows`` generated rows, once per pass."""
    db = "report" + secrets.token_hex(4)
    migrate(client, db)
    client.command(GENERATE.format(db=db, rows=rows), settings={"max_insert_threads": 2})
    store = ClientStore(client)
    build_report(store, db, timedelta(hours=24))  # warm caches once
    passes = []
    for _ in range(repeat):
        started = time.perf_counter()
        build_report(store, db, timedelta(hours=24))
        passes.append(time.perf_counter() - started)
    return passes


def backtest_rates(client: Any, rows: int, repeat: int) -> list[tuple[float, float]]:
    """Per pass, intents per second replayed from the store (read included) through the customer
    support policy, and its floor: the same intents, already in memory, replayed without ClickHouse."""
    db = "backtest" + secrets.token_hex(4)
    migrate(client, db)
    client.command(GENERATE.format(db=db, rows=rows))
    policy = load_policy(POLICY)
    end = datetime.now(UTC)
    history = list(audited_intents(ClientStore(client), db, end - timedelta(days=2), end))
    passes = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = backtest(ClientStore(client), db, policy, timedelta(days=2), end)
        rate = result.replayed / (time.perf_counter() - started)
        started = time.perf_counter()
        floor = replay(policy, history)
        passes.append((rate, floor.replayed / (time.perf_counter() - started)))
    return passes


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _free_kafka_port() -> int:
    return next(p for p in range(19500, 19600)
                if port_is_free("127.0.0.1", p) and port_is_free("127.0.0.1", p + 1))


def _median_ratio(pairs: list[tuple[float, float]]) -> float:
    return round(statistics.median(a / b for a, b in pairs), 3)


async def _kafka_part(bootstrap: str, client: Any, args: argparse.Namespace) -> dict[str, Any]:
    rows = _decoded(_payloads(args.sink_rows, datetime.now(UTC)), "floor.audit")
    pairs = []
    arrow = []
    for _ in range(args.repeat):  # alternating: the sink, then its floor
        sink_rate = await sink_throughput(bootstrap, client, args.sink_rows)
        floor_rate, arrow_rate = insert_floor(client, rows, DEFAULT_MAX_ROWS)
        pairs.append((sink_rate, floor_rate))
        arrow.append(arrow_rate)
    sink = [round(rate) for rate, _ in pairs]
    floors = {"floor_rows_per_s": max(round(f) for _, f in pairs),
              "floor_passes": [round(f) for _, f in pairs],
              "arrow_floor_rows_per_s": round(max(arrow)), "arrow_floor_passes": [round(a) for a in arrow],
              "sink_vs_floor": _median_ratio(pairs), "sink_batch_rows": DEFAULT_MAX_ROWS}
    load = {"sink": _load()}
    lag = await lag_p99(bootstrap, client, 1000, args.lag_seconds)
    load["lag"] = _load()
    return {"sink_rows_per_s": max(sink), "sink_passes": sink, **floors, "lag_p99_s": lag, "load": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON line")
    parser.add_argument("--bootstrap", help="an existing Kafka; else a broker is started on 19500-19599")
    parser.add_argument("--sink-rows", type=int, default=200_000)
    parser.add_argument("--lag-seconds", type=int, default=10)
    parser.add_argument("--report-rows", type=int, default=10_000_000)
    parser.add_argument("--backtest-rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="passes per figure; the best is reported")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    client = open_client(f"chdb://{work / 'chdb'}")
    broker = None
    if args.bootstrap is None:
        settings = Settings()
        require_open_broker(settings)
        broker = BrokerConfig(port=_free_kafka_port(), data_dir=work / "kafka",
                              cache_dir=settings.artifact_cache_dir, version=settings.kafka_version)
        start_broker(broker)
    try:
        figures = asyncio.run(_kafka_part(args.bootstrap or f"127.0.0.1:{broker.port if broker else 0}",
                                          client, args))
    finally:
        if broker is not None:
            stop_broker(broker.data_dir)
    report = [round(seconds, 3) for seconds in report_seconds(client, args.report_rows, args.repeat)]
    figures |= {"report_s": min(report), "report_passes": report, "report_rows": args.report_rows}
    figures["load"]["report"] = _load()
    backtests = backtest_rates(client, args.backtest_rows, args.repeat)
    figures |= {"backtest_per_s": round(max(b for b, _ in backtests)),
                "backtest_passes": [round(b) for b, _ in backtests],
                "backtest_floor_per_s": round(max(f for _, f in backtests)),
                "backtest_floor_passes": [round(f) for _, f in backtests],
                "backtest_vs_floor": _median_ratio(backtests)}
    figures["load"]["backtest"] = _load()
    print(json.dumps(figures) if args.json else "\n".join(f"{k}: {v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
