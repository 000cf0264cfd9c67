"""Unit tests of the launcher's pure parts: templates, protocol codec, cache checks, tool discovery."""

from __future__ import annotations

import base64
import os
import socket
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra.kafka import BrokerConfig, LauncherError, broker_status, cached_libs, ensure_artifacts, stop_broker
from infra.kafka.artifacts import MANIFEST, mvn_command, render_pom
from infra.kafka.launcher import java_command, new_cluster_id, render_server_properties, start_broker
from infra.kafka.process import find_java, find_mvn, java_major, port_is_free, tail
from infra.kafka.protocol import (
    METADATA_API_KEY,
    METADATA_VERSION,
    BrokerInfo,
    ProtocolError,
    decode_metadata_response,
    encode_metadata_request,
)
from infra.kafka.secure import Credentials
from infra.kafka.templates import render
from sluicegate.cli.kafka import app as kafka_app
from sluicegate.cli.kafka import describe

runner = CliRunner()


def _string(text: str | None) -> bytes:
    if text is None:
        return struct.pack(">h", -1)
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def _metadata_response(correlation_id: int, cluster_id: str | None) -> bytes:
    brokers = struct.pack(">i", 1) + struct.pack(">i", 1) + _string("127.0.0.1") + struct.pack(">i", 19100)
    brokers += _string(None)  # rack
    return struct.pack(">ii", correlation_id, 0) + brokers + _string(cluster_id) + struct.pack(">i", 1)


def test_render_fills_placeholders_and_rejects_unknown_ones() -> None:
    assert render("a=@A@ b=@B_2@", {"A": 1, "B_2": "x"}) == "a=1 b=x"
    with pytest.raises(KeyError, match="@MISSING@"):
        render("x=@MISSING@", {})


def test_server_properties_describe_one_loopback_kraft_node(tmp_path: Path) -> None:
    text = render_server_properties(19100, 19199, tmp_path / "kraft")
    props = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19199"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19100,CONTROLLER://127.0.0.1:19199"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19100"
    assert props["log.dirs"] == str(tmp_path / "kraft")
    assert props["group.initial.rebalance.delay.ms"] == "0"
    factors = [v for k, v in props.items() if k.endswith("replication.factor")]
    assert factors and set(factors) == {"1"}


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_secure_server_properties_authenticate_and_authorize(tmp_path: Path) -> None:
    credentials = Credentials.generate()
    props = properties(render_server_properties(19100, 19199, tmp_path / "kraft", credentials))
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:19100,CONTROLLER://127.0.0.1:19199"
    assert props["listener.security.protocol.map"] == (
        "CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT")
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["super.users"] == "User:admin" and props["allow.everyone.if.no.acl.found"] == "false"
    jaas = props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"]
    assert credentials.password("admin") in jaas
    assert credentials.password("agent") not in repr(credentials)


def test_a_node_of_a_three_node_cluster_replicates_three_times(tmp_path: Path) -> None:
    quorum = ((1, 19201), (2, 19202), (3, 19203))
    props = properties(render_server_properties(19102, 19202, tmp_path / "kraft", node_id=2, quorum=quorum))
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19201,2@127.0.0.1:19202,3@127.0.0.1:19203"
    factors = [v for k, v in props.items() if k.endswith("replication.factor")]
    assert set(factors) == {"3"} and props["min.insync.replicas"] == "2"


def test_cluster_id_is_a_kafka_uuid() -> None:
    cluster_id = new_cluster_id()
    assert len(cluster_id) == 22
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    assert new_cluster_id() != cluster_id


def test_cluster_id_never_looks_like_an_option() -> None:
    """One id in 64 would start with '-' by chance; the storage tool would take it for a flag."""
    assert not any(new_cluster_id().startswith("-") for _ in range(2000))


def test_java_command_is_small_and_runs_the_broker_main_class(tmp_path: Path) -> None:
    argv = java_command("/usr/bin/java", tmp_path / "libs", tmp_path, "512m")
    assert argv[0] == "/usr/bin/java"
    assert "-Xmx512m" in argv
    assert argv[-2:] == ["kafka.Kafka", str(tmp_path / "server.properties")]
    assert argv[argv.index("-cp") + 1] == f"{tmp_path / 'libs'}/*"


def test_metadata_request_is_size_prefixed_v4_for_no_topics() -> None:
    frame = encode_metadata_request(7)
    (size,) = struct.unpack_from(">i", frame)
    assert size == len(frame) - 4
    api_key, version, correlation_id = struct.unpack_from(">hhi", frame, 4)
    assert (api_key, version, correlation_id) == (METADATA_API_KEY, METADATA_VERSION, 7)
    assert frame[-5:] == struct.pack(">ib", 0, 0)


def test_metadata_response_is_decoded() -> None:
    answer = decode_metadata_response(_metadata_response(7, "abc"), 7)
    assert answer.cluster_id == "abc"
    assert answer.controller_id == 1
    assert answer.brokers == (BrokerInfo(1, "127.0.0.1", 19100),)


def test_metadata_response_with_wrong_correlation_id_or_truncated_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="correlation"):
        decode_metadata_response(_metadata_response(8, "abc"), 7)
    with pytest.raises(ProtocolError, match="truncated"):
        decode_metadata_response(_metadata_response(7, "abc")[:-3], 7)


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_402"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("no version here", None),
    ],
)
def test_java_major(output: str, major: int | None) -> None:
    assert java_major(output) == major


def test_cache_counts_only_when_every_manifest_jar_is_present(tmp_path: Path) -> None:
    assert cached_libs(tmp_path, "3.9.1") is None
    libs = tmp_path / "3.9.1" / "libs"
    libs.mkdir(parents=True)
    (tmp_path / "3.9.1" / MANIFEST).write_text("a.jar\nb.jar\n")
    (libs / "a.jar").write_bytes(b"")
    assert cached_libs(tmp_path, "3.9.1") is None
    (libs / "b.jar").write_bytes(b"")
    assert cached_libs(tmp_path, "3.9.1") == libs


def test_complete_cache_is_used_without_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    libs = tmp_path / "9.9.9" / "libs"
    libs.mkdir(parents=True)
    (libs / "kafka_2.13-9.9.9.jar").write_bytes(b"")
    (tmp_path / "9.9.9" / MANIFEST).write_text("kafka_2.13-9.9.9.jar\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert ensure_artifacts("9.9.9", tmp_path) == libs


def test_pom_pins_the_broker_version() -> None:
    pom = render_pom("3.9.1")
    assert "<artifactId>kafka_2.13</artifactId>\n      <version>3.9.1</version>" in pom
    assert "@" not in pom.replace("xmlns", "")


def test_mvn_runs_offline_only_when_asked(tmp_path: Path) -> None:
    online = mvn_command("mvn", tmp_path / "pom.xml", tmp_path / "libs", offline=False)
    offline = mvn_command("mvn", tmp_path / "pom.xml", tmp_path / "libs", offline=True)
    assert "-o" not in online
    assert "-o" in offline
    assert f"-DoutputDirectory={tmp_path / 'libs'}" in offline


def test_missing_java_and_maven_are_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(LauncherError, match="`java` is not on PATH"):
        find_java()
    with pytest.raises(LauncherError, match=r"`mvn`\) is needed"):
        find_mvn()
    with pytest.raises(LauncherError, match="Maven"):
        ensure_artifacts("3.9.1", tmp_path / "cache")


def test_taken_port_is_detected_and_refused(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
        config = BrokerConfig(port, tmp_path / "data", tmp_path / "cache", "3.9.1")
        with pytest.raises(LauncherError, match=f"port {port} is already in use"):
            start_broker(config)
        result = runner.invoke(kafka_app, ["start", "--port", str(port), "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert f"error: port {port} is already in use" in result.output
    assert "Traceback" not in result.output
    assert port_is_free("127.0.0.1", port)


def test_status_and_stop_of_a_fresh_data_dir(tmp_path: Path) -> None:
    status = broker_status(tmp_path)
    assert not status.running
    assert not status.ready
    assert stop_broker(tmp_path) is False
    lines = ["pid: -", "port: 9092", f"data dir: {tmp_path}", "ready: no"]
    assert describe(status, 9092).splitlines() == lines
    result = runner.invoke(kafka_app, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "ready: no" in result.output


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(log, 3).splitlines() == ["line 97", "line 98", "line 99"]
    assert tail(tmp_path / "missing.log") == ""


def test_stale_pid_file_is_not_taken_for_a_running_broker(tmp_path: Path) -> None:
    (tmp_path / "broker.json").write_text(f'{{"pid": {os.getpid()}, "port": 19100}}')
    assert not broker_status(tmp_path).running  # this pid is alive but is not a Kafka broker
