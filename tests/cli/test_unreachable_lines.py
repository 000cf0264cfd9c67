"""The one line for an unreachable service: what it names, found anywhere in the exception's chain."""

from __future__ import annotations

from aiokafka.errors import KafkaConnectionError, UnknownTopicOrPartitionError
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from sluicegate.cli.unreachable import describe

BOOTSTRAP_ERROR = "Unable to bootstrap from [('127.0.0.1', 19092, <AddressFamily.AF_INET: 2>)]"


def test_kafka_names_the_hosts_it_tried() -> None:
    line = describe(KafkaConnectionError(BOOTSTRAP_ERROR))
    assert line is not None and line.startswith("cannot reach Kafka at 127.0.0.1:19092: KafkaConnectionError")


def test_a_cause_or_a_group_member_is_found() -> None:
    try:
        try:
            raise KafkaConnectionError(BOOTSTRAP_ERROR)
        except KafkaConnectionError as exc:
            raise RuntimeError("publishing failed") from exc
    except RuntimeError as exc:
        assert (describe(exc) or "").startswith("cannot reach Kafka at 127.0.0.1:19092")
    group = ExceptionGroup("tasks", [ValueError("other"), KafkaConnectionError(BOOTSTRAP_ERROR)])
    assert (describe(group) or "").startswith("cannot reach Kafka")


def test_other_kafka_and_clickhouse_errors_are_one_line_too() -> None:
    assert (describe(UnknownTopicOrPartitionError()) or "").startswith("Kafka at ")
    refused = DatabaseError("Code: 516. Authentication failed (AUTHENTICATION_FAILED)", code=516)
    assert (describe(refused) or "").startswith("ClickHouse at ")


def test_a_clickhouse_url_is_named_without_its_password() -> None:
    error = OperationalError("Error executing HTTP request attempt 1 (http://alice:s3cret@db.internal:8123)")
    line = describe(error)
    assert line is not None and line.startswith("cannot reach ClickHouse at http://db.internal:8123: ")
    assert "s3cret" not in line and "alice" not in line


def test_anything_else_keeps_its_traceback() -> None:
    assert describe(ValueError("a bug")) is None
    assert describe(KeyError("kafka")) is None
