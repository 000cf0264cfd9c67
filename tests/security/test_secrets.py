"""Secrets are never printed (settings, the worker's and the bot's configs) and key files stay private."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from consumers.slack_bot import SlackBotConfig
from sluicegate.secret_files import SecretFileError, check_private, read_private, write_private
from sluicegate.settings import Settings
from streams.app import WorkerConfig
from tests.approvals.conftest import BOT_TOKEN, SIGNING_SECRET, USERS_YAML

PASSWORD = "correct-horse-battery-staple"
SASL = {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "worker", "kafka_sasl_password": PASSWORD}


def test_sasl_settings_become_client_options_and_the_password_stays_out_of_the_repr() -> None:
    settings = Settings(**SASL)  # type: ignore[arg-type]
    options = settings.kafka_client_options()
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "worker" and options["sasl_plain_password"] == PASSWORD
    assert options["ssl_context"].verify_mode.name == "CERT_REQUIRED"
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)


def test_plaintext_needs_no_options() -> None:
    assert Settings().kafka_client_options() == {}


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SASL.items():
        monkeypatch.setenv(f"SLUICEGATE_{name.upper()}", value)
    assert Settings().kafka_client_options()["sasl_plain_username"] == "worker"


@pytest.mark.parametrize("missing", ["kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password"])
def test_sasl_without_a_mechanism_user_or_password_is_refused(missing: str) -> None:
    with pytest.raises(ValidationError, match=f"SLUICEGATE_{missing.upper()}"):
        Settings(**{k: v for k, v in SASL.items() if k != missing})  # type: ignore[arg-type]


def test_min_insync_replicas_above_the_replication_factor_is_refused() -> None:
    with pytest.raises(ValidationError, match="MIN_INSYNC_REPLICAS"):
        Settings(kafka_replication_factor=2, kafka_min_insync_replicas=3)


def test_a_client_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    key, cert = tmp_path / "client.key", tmp_path / "client.pem"
    key.write_text("not a key")
    cert.write_text("not a cert")
    key.chmod(0o644)
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_certfile=cert, kafka_ssl_keyfile=key)
    with pytest.raises(SecretFileError, match="readable by others"):
        settings.kafka_client_options()


def test_secret_files_are_written_0600_and_refused_when_others_can_read_them(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    write_private(path, "s3cret\n")
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_private(path) == "s3cret"
    os.chmod(path, 0o640)
    with pytest.raises(SecretFileError, match="chmod 600"):
        check_private(path)


def test_the_workers_config_hides_its_keys_and_kafka_password() -> None:
    config = WorkerConfig(bootstrap="b:1", trust_keys="k1:SECRETRING", trust_signing_key="SECRETSIGNER",
                          kafka_options=Settings(**SASL).kafka_client_options())  # type: ignore[arg-type]
    shown = repr(config)
    assert "SECRETRING" not in shown and "SECRETSIGNER" not in shown and PASSWORD not in shown


def test_the_slack_bots_config_hides_its_token_secret_and_credentials(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(USERS_YAML)
    config = SlackBotConfig.create(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, reviewers_file=users,
                                   trust_off=True, bootstrap_servers="b:1", state_file=tmp_path / "posted",
                                   kafka_options=Settings(**SASL).kafka_client_options())  # type: ignore[arg-type]
    shown = repr(config)
    assert BOT_TOKEN not in shown and SIGNING_SECRET not in shown and PASSWORD not in shown


def test_trust_keys_readable_by_others_are_refused(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sluicegate.cli import _register, app

    _register()
    runner = CliRunner()
    keys = tmp_path / "keys"
    assert runner.invoke(app, ["trust", "init", str(keys)]).exit_code == 0
    assert runner.invoke(app, ["trust", "agent", str(keys), "fin-1", "--role", "support",
                               "--environment", "production"]).exit_code == 0
    (keys / "keyring").chmod(0o644)
    refused = runner.invoke(app, ["trust", "agent", str(keys), "fin-1", "--role", "support",
                                  "--environment", "production"])
    assert refused.exit_code != 0 and "readable by others" in refused.output


def test_credentials_and_key_rings_keep_their_keys_out_of_their_repr() -> None:
    from sluicegate.trust import AgentCredential, KeyRing, SignerCredential

    ring = KeyRing.generate()
    for value in (ring, AgentCredential.issue(ring, "a", "r", "e"), SignerCredential.issue(ring, "bot", "b")):
        assert "key=" not in repr(value) and "keys=" not in repr(value)
