"""The launcher against real brokers: the session's, and a second one started, stopped and restarted here."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from typer.testing import CliRunner

from infra.kafka import BrokerConfig, LauncherError, broker_status, start_broker, stop_broker
from infra.kafka.process import free_port, port_is_free
from sluicegate.cli.kafka import app as kafka_app
from sluicegate.settings import Settings
from tests.conftest import KafkaService

pytestmark = pytest.mark.integration
runner = CliRunner()


def _session_broker(kafka_service: KafkaService) -> BrokerConfig:
    if kafka_service.local is None:
        pytest.skip("the session's Kafka was not started by the local launcher")
    return kafka_service.local


def _fresh_config(data_dir: Path) -> BrokerConfig:
    settings = Settings()
    return BrokerConfig(free_port(), data_dir, settings.artifact_cache_dir.resolve(), settings.kafka_version)


def test_session_broker_is_ready_and_a_second_start_is_a_no_op(kafka_service: KafkaService) -> None:
    config = _session_broker(kafka_service)
    status = broker_status(config.data_dir)
    assert status.ready
    assert status.port == config.port
    assert status.pid is not None
    again = start_broker(config)
    assert not again.started
    assert again.status.pid == status.pid
    result = runner.invoke(kafka_app, ["status", "--data-dir", str(config.data_dir)])
    assert result.exit_code == 0
    assert f"pid: {status.pid}\nport: {config.port}\n" in result.output
    assert "ready: yes" in result.output


def test_running_broker_keeps_its_port_and_its_port_is_not_shared(
    kafka_service: KafkaService, tmp_path: Path
) -> None:
    config = _session_broker(kafka_service)
    with pytest.raises(LauncherError, match=f"already runs on port {config.port}"):
        start_broker(dataclasses.replace(config, port=free_port()))
    with pytest.raises(LauncherError, match=f"port {config.port} is already in use"):
        start_broker(dataclasses.replace(config, data_dir=tmp_path / "other"))


async def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def _first_value(bootstrap: str, topic: str) -> bytes | None:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        message = await consumer.getone()
        value: bytes | None = message.value
        return value
    finally:
        await consumer.stop()


async def test_stop_and_restart_keep_the_data_and_need_no_maven(
    tmp_path: Path, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _fresh_config(tmp_path / "data")
    data_dir = str(config.data_dir)
    started = runner.invoke(kafka_app, ["start", "--port", str(config.port), "--data-dir", data_dir])
    try:
        assert started.exit_code == 0, started.output
        assert f"is up on 127.0.0.1:{config.port}" in started.output
        cluster_id = (config.data_dir / "cluster.id").read_text()
        bootstrap = f"127.0.0.1:{config.port}"
        await _produce(bootstrap, unique_name, b"kept across restarts")

        stopped = runner.invoke(kafka_app, ["stop", "--data-dir", data_dir])
        assert stopped.exit_code == 0
        assert "Stopped the Kafka broker" in stopped.output
        after_stop = broker_status(config.data_dir)
        assert not after_stop.running
        assert after_stop.port == config.port  # the last port is still reported
        assert port_is_free("127.0.0.1", config.port)
        again = runner.invoke(kafka_app, ["stop", "--data-dir", data_dir])
        assert again.exit_code == 0
        assert "No Kafka broker is running" in again.output

        java = shutil.which("java")
        assert java is not None
        only_java = tmp_path / "bin"
        only_java.mkdir()
        (only_java / "java").symlink_to(os.path.realpath(java))
        monkeypatch.setenv("PATH", str(only_java))  # no mvn: the artifact cache must serve
        restarted = start_broker(config)
        assert restarted.started
        assert restarted.status.ready
        assert (config.data_dir / "cluster.id").read_text() == cluster_id
        assert await _first_value(bootstrap, unique_name) == b"kept across restarts"
    finally:
        stop_broker(config.data_dir)


def test_broker_dying_during_start_is_reported_with_its_log(tmp_path: Path) -> None:
    config = _fresh_config(tmp_path / "data")
    try:
        start_broker(config)
    finally:
        stop_broker(config.data_dir)
    meta = config.data_dir / "kraft" / "meta.properties"
    meta.write_text(meta.read_text().replace("node.id=1", "node.id=7"))
    with pytest.raises(LauncherError, match="exited with code 1 during start") as failure:
        start_broker(config)
    assert "Stored node id 7 doesn't match" in str(failure.value)
    assert not broker_status(config.data_dir).running
    argv = ["start", "--port", str(config.port), "--data-dir", str(config.data_dir)]
    result = runner.invoke(kafka_app, argv)
    assert result.exit_code == 1
    assert result.output.startswith("error: the Kafka broker exited")
    assert "Traceback" not in result.output
