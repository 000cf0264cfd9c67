"""The secure broker's throwaway TLS material and configuration, without a broker: what the certificates
say, that they are kept across starts and renewed before they expire, keys 0600, and the rendered
listener of each protocol."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from infra.kafka import tls
from infra.kafka.launcher import render_server_properties
from infra.kafka.secure import (
    ADMIN,
    ROLES,
    Credentials,
    Listener,
    client_options,
    listener_of,
    settings_lines,
)


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def test_the_broker_certificate_names_loopback_and_chains_to_the_ca(tmp_path: Path) -> None:
    files = tls.ensure_certificates(tmp_path, ("agent",))
    broker = certificate(files.cert_file(tls.BROKER))
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert len(x509.load_pem_x509_certificates(files.cert_file(tls.BROKER).read_bytes())) == 2  # + the CA
    agent = certificate(files.cert_file("agent"))
    assert agent.subject.rfc4514_string() == "CN=agent"  # the SSL listener's principal: User:agent
    for cert in (broker, agent):
        cert.verify_directly_issued_by(certificate(files.ca_file))
    for name in ("ca", tls.BROKER, "agent"):
        key = files.ca_key if name == "ca" else files.key_file(name)
        assert key.stat().st_mode & 0o777 == 0o600
    context = tls.client_context(files.ca_file, files.cert_file("agent"), files.key_file("agent"))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_certificates_are_kept_across_starts_and_renewed_before_they_expire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = tls.ensure_certificates(tmp_path, ("agent",))
    ca = first.ca_file.read_bytes()
    assert tls.ensure_certificates(tmp_path, ("agent",)).ca_file.read_bytes() == ca
    monkeypatch.setattr(tls, "VALIDITY", tls.RENEW_BEFORE - timedelta(days=1))
    tls.tls_files(tmp_path).ca_file.unlink()
    short = tls.ensure_certificates(tmp_path, ("agent",)).ca_file.read_bytes()  # a CA that expires soon
    assert short != ca
    renewed = tls.ensure_certificates(tmp_path, ("agent",))  # so the next start renews it and all it signs
    assert certificate(renewed.ca_file).not_valid_after_utc - datetime.now(UTC) < tls.RENEW_BEFORE
    assert renewed.ca_file.read_bytes() != short
    certificate(renewed.cert_file("agent")).verify_directly_issued_by(certificate(renewed.ca_file))


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SSL"])
def test_a_tls_listener_renders_pem_stores_and_prints_the_ca(tmp_path: Path, protocol: str) -> None:
    files = tls.ensure_certificates(tmp_path, (ADMIN, *ROLES))
    credentials = Credentials.generate()
    listener = Listener(protocol, files)
    props = properties(render_server_properties(19100, 19199, tmp_path / "kraft", credentials,
                                                secure_listener=listener))
    (tmp_path / "server.properties").write_text("\n".join(f"{k}={v}" for k, v in props.items()))
    assert listener_of(tmp_path) == listener
    assert props["listeners"] == f"{protocol}://127.0.0.1:19100,CONTROLLER://127.0.0.1:19199"
    assert props["ssl.keystore.type"] == "PEM" and props["ssl.truststore.location"] == str(files.ca_file)
    assert props["ssl.keystore.key"].startswith("-----BEGIN PRIVATE KEY-----\\n")  # \n: one per line
    assert props["ssl.keystore.certificate.chain"].count("BEGIN CERTIFICATE") == 2
    lines = settings_lines("sink", "127.0.0.1:19100", credentials, listener)
    assert f"SLUICEGATE_KAFKA_SSL_CAFILE={files.ca_file}" in lines
    options = client_options("sink", credentials.password("sink"), listener)
    assert options["security_protocol"] == protocol and isinstance(options["ssl_context"], ssl.SSLContext)
    if protocol == "SSL":  # mutual TLS: a certificate per user, the CN as principal, the broker a super user
        assert props["ssl.client.auth"] == "required" and "super.users" in props
        assert props["super.users"] == "User:admin;User:broker"
        assert f"SLUICEGATE_KAFKA_SSL_KEYFILE={files.key_file('sink')}" in lines
        assert "sasl_plain_password" not in options
    else:
        assert "ssl.client.auth" not in props and props["super.users"] == "User:admin"
        assert "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config" in props


def test_an_open_brokers_data_dir_has_the_default_listener(tmp_path: Path) -> None:
    (tmp_path / "server.properties").write_text(render_server_properties(19100, 19199, tmp_path / "kraft"))
    assert listener_of(tmp_path) == Listener()
    assert listener_of(tmp_path / "missing") == Listener()
