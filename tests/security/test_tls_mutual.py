"""``sluicegate kafka start --secure --protocol SSL``: mutual TLS, where the common name of a client's
certificate is its Kafka user, so the ACL matrix holds as it does for SCRAM users; a client without a
certificate is refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from typer.testing import CliRunner

from sluicegate.cli.kafka import app
from tests.security.tls_kafka import TlsKafka, produce, tls_broker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mutual_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsKafka]:
    with tls_broker(tmp_path_factory.mktemp("ssl-kafka"), "SSL") as kafka:
        yield kafka


async def test_a_certificate_is_its_roles_user_and_no_certificate_is_refused(
    mutual_tls: TlsKafka, unique_name: str,
) -> None:
    kafka = mutual_tls
    names = (await kafka.deployment(unique_name, partitions=1)).names
    agent = kafka.settings("agent")
    assert agent.kafka_security_protocol == "SSL" and agent.kafka_ssl_certfile is not None
    await produce(kafka.bootstrap, agent.kafka_client_options(), names.intents)
    await produce(kafka.bootstrap, kafka.settings("worker").kafka_client_options(), names.decisions)
    with pytest.raises(TopicAuthorizationFailedError):  # CN=agent is User:agent: decisions are the worker's
        await produce(kafka.bootstrap, agent.kafka_client_options(), names.decisions)
    anonymous = kafka.settings("agent", kafka_ssl_certfile=None, kafka_ssl_keyfile=None)
    with pytest.raises(KafkaConnectionError):
        await produce(kafka.bootstrap, anonymous.kafka_client_options(), names.intents)


def test_start_prints_the_ca_and_each_roles_certificate(mutual_tls: TlsKafka) -> None:
    """``kafka start`` on the running broker is a no-op that prints the lines clients need."""
    assert mutual_tls.listener.tls is not None
    tls = mutual_tls.listener.tls
    port = mutual_tls.bootstrap.rpartition(":")[2]
    started = CliRunner().invoke(app, ["start", "--secure", "--protocol", "SSL", "--port", port,
                                       "--data-dir", str(tls.directory.parent)])
    assert started.exit_code == 0, started.output
    assert f"SLUICEGATE_KAFKA_SSL_CAFILE={tls.ca_file}\n" in started.output
    assert f"SLUICEGATE_KAFKA_SSL_CERTFILE={tls.cert_file('sink')}\n" in started.output
    assert f"SLUICEGATE_KAFKA_SSL_KEYFILE={tls.key_file('sink')}\n" in started.output
    assert oct(tls.key_file("sink").stat().st_mode & 0o777) == "0o600"
