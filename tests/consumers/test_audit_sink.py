"""The sink on the real broker and the real engine: outages, retries and dead letters lose nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition
from clickhouse_connect.driver.client import Client

from consumers.audit_sink import AuditSink, SinkConfig, open_sink
from schemas import AuditRecord, DecisionKind, ExecutionOutcome, TopicNames
from tests.consumers.kafka_io import create_topics, publish, read_all
from tests.consumers.records import decision_record, intent, outcome

pytestmark = pytest.mark.integration
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class FlakyClient:
    """The real client, whose first ``failures`` inserts fail before (or after) really inserting."""

    def __init__(self, client: Client, failures: int, *, after_insert: bool) -> None:
        self.client, self.failures, self.after_insert = client, failures, after_insert

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            if self.after_insert:
                self.client.raw_insert(*args, **kwargs)
            raise ConnectionError("ClickHouse is unavailable (injected)")
        return self.client.raw_insert(*args, **kwargs)


def workload(count: int) -> list[AuditRecord | ExecutionOutcome]:
    """``count`` decisions, every other one with its outcome."""
    records: list[AuditRecord | ExecutionOutcome] = []
    for index in range(count):
        asked = intent(START + timedelta(milliseconds=index), agent=f"agent-{index % 5}")
        records.append(decision_record(asked, DecisionKind.ALLOW))
        if index % 2 == 0:
            records.append(outcome(asked))
    return records


async def run_sink(bootstrap: str, inserter: Any, config: SinkConfig, rows: int) -> AuditSink:
    """Run a sink until ``rows`` rows are stored and committed, then stop it."""
    sink = await open_sink(bootstrap, inserter, config)
    consumer = sink.consumer
    task = asyncio.create_task(sink.run())
    try:
        await asyncio.wait_for(sink.wait_stored(rows), timeout=60)
        sink.stop()
        await task
        committed = {tp: await consumer.committed(tp) for tp in consumer.assignment()}
        ends = await consumer.end_offsets(list(consumer.assignment()))
        assert committed == ends, "every consumed offset is committed once stored"
    finally:
        task.cancel()
        await sink.close()
    return sink


def count(client: Client, sql: str) -> int:
    return int(str(client.command(sql)))


@pytest.mark.parametrize("after_insert", [False, True], ids=["fails-before-insert", "fails-after-insert"])
async def test_clickhouse_outage_loses_and_duplicates_nothing(
    kafka_bootstrap: str, clickhouse_client: Client, audit_db: str, unique_name: str, after_insert: bool,
) -> None:
    topics = TopicNames(unique_name)
    await create_topics(kafka_bootstrap, topics)
    records = workload(600)
    await publish(kafka_bootstrap, topics, records)
    config = SinkConfig(database=audit_db, topics=topics, group_id=unique_name, max_rows=250,
                        backoff_initial_s=0.01)

    sink = await run_sink(kafka_bootstrap, FlakyClient(clickhouse_client, 3, after_insert=after_insert),
                          config, len(records))

    assert sink.stats.insert_failures == 3
    table = f"{audit_db}.audit_events"
    assert count(clickhouse_client, f"SELECT count() FROM {table} FINAL") == len(records)
    # the retried batch carries the same insert_deduplication_token: chDB drops the second copy
    assert count(clickhouse_client, f"SELECT count() FROM {table}") == len(records)
    assert count(clickhouse_client, f"SELECT count() FROM {table} WHERE event_type = 'outcome'") == 300


async def test_undecodable_records_go_to_the_dead_letter_topic(
    kafka_bootstrap: str, clickhouse_client: Client, audit_db: str, unique_name: str,
) -> None:
    topics = TopicNames(unique_name)
    await create_topics(kafka_bootstrap, topics, partitions=1)
    good = workload(4)
    bad = [(topics.audit, b"not json"), (topics.audit, b'{"request_id": "nope"}')]
    await publish(kafka_bootstrap, topics, good, raw=bad)
    config = SinkConfig(database=audit_db, topics=topics, group_id=unique_name)

    sink = await run_sink(kafka_bootstrap, clickhouse_client, config, len(good))

    assert sink.stats.dead_lettered == 2
    letters = await read_all(kafka_bootstrap, topics.dead_letter, 2)
    assert sorted(letter.value or b"" for letter in letters) == sorted(value for _, value in bad)
    for letter in letters:
        headers = dict(letter.headers)
        assert headers["source_topic"].decode() == topics.audit
        assert b"invalid" in headers["error"]
    assert count(clickhouse_client, f"SELECT count() FROM {audit_db}.audit_events") == len(good)


def test_dedup_token_names_the_offset_ranges() -> None:
    from consumers.audit_sink import dedup_token

    a, b = TopicPartition("t.audit", 0), TopicPartition("t.audit", 1)
    assert dedup_token({a: (0, 9), b: (5, 7)}) == dedup_token({b: (5, 7), a: (0, 9)})
    assert dedup_token({a: (0, 9)}) != dedup_token({a: (0, 10)})
