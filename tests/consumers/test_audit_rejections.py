"""The sink on the real broker and the real engine when ClickHouse rejects rows for their data: after
bounded retries the batch is stored in parts, only the rows ClickHouse rejects alone go to the dead-letter
topic (original record, error, source), and the sink commits and goes on. Failures that are not about
the data are retried without loss, however many there are."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from consumers.audit_sink import SinkConfig
from schemas import DecisionKind, TopicNames
from tests.consumers.kafka_io import create_topics, publish, read_all
from tests.consumers.records import decision_record, intent
from tests.consumers.test_audit_sink import START, count, run_sink, workload

pytestmark = pytest.mark.integration
POISON = "poison-agent"


class BusyClient:
    """The real client, whose first ``failures`` inserts fail as a busy server does (TOO_MANY_PARTS)."""

    def __init__(self, client: Client, failures: int) -> None:
        self.client, self.failures = client, failures

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise DatabaseError("Code: 252. Too many parts (injected). (TOO_MANY_PARTS)", code=252)
        return self.client.raw_insert(*args, **kwargs)


async def test_rows_clickhouse_rejects_are_dead_lettered_and_the_rest_stored(
    kafka_bootstrap: str, clickhouse_client: Client, audit_db: str, unique_name: str,
) -> None:
    table = f"{audit_db}.audit_events"
    clickhouse_client.command(f"ALTER TABLE {table} ADD CONSTRAINT no_poison CHECK agent_id != '{POISON}'")
    topics = TopicNames(unique_name)
    await create_topics(kafka_bootstrap, topics)
    good = workload(400)
    poison = [decision_record(intent(START + timedelta(seconds=i), agent=POISON), DecisionKind.ALLOW)
              for i in range(3)]
    await publish(kafka_bootstrap, topics, [*good[:100], poison[0], *good[100:300], *poison[1:], *good[300:]])
    config = SinkConfig(database=audit_db, topics=topics, group_id=unique_name, max_rows=250,
                        backoff_initial_s=0.01, decoders=0)

    sink = await run_sink(kafka_bootstrap, clickhouse_client, config, len(good))  # ... and commits to the end

    assert (sink.stats.rows_rejected, sink.stats.dead_lettered) == (3, 3)
    letters = await read_all(kafka_bootstrap, topics.dead_letter, 3)
    originals = sorted(record.model_dump_json().encode() for record in poison)
    assert sorted(letter.value or b"" for letter in letters) == originals
    for letter in letters:
        headers = dict(letter.headers)
        assert headers["source_topic"].decode() == topics.audit
        assert b"rejected by ClickHouse" in headers["error"] and b"VIOLATED_CONSTRAINT" in headers["error"]
    assert count(clickhouse_client, f"SELECT count() FROM {table} FINAL") == len(good)
    assert count(clickhouse_client, f"SELECT count() FROM {table}") == len(good), "no row stored twice"
    assert count(clickhouse_client, f"SELECT count() FROM {table} WHERE agent_id = '{POISON}'") == 0


async def test_a_busy_clickhouse_is_retried_past_the_rejection_bound_and_nothing_dead_lettered(
    kafka_bootstrap: str, clickhouse_client: Client, audit_db: str, unique_name: str,
) -> None:
    topics = TopicNames(unique_name)
    await create_topics(kafka_bootstrap, topics)
    records = workload(300)
    await publish(kafka_bootstrap, topics, records)
    config = SinkConfig(database=audit_db, topics=topics, group_id=unique_name, max_rows=250,
                        backoff_initial_s=0.01, rejection_attempts=2, decoders=0)

    sink = await run_sink(kafka_bootstrap, BusyClient(clickhouse_client, 6), config, len(records))

    assert sink.stats.insert_failures == 6
    assert (sink.stats.rows_rejected, sink.stats.dead_lettered) == (0, 0)
    assert count(clickhouse_client, f"SELECT count() FROM {audit_db}.audit_events FINAL") == len(records)
