"""TLS for the secure local broker (``sluicegate kafka start --secure --protocol SASL_SSL|SSL``).

A throwaway certificate authority, the broker's certificate (for ``127.0.0.1`` and ``localhost``) and one
client certificate per user, made with ``cryptography`` into ``<data dir>/tls/`` on the first TLS start
and again when one expires within :data:`RENEW_BEFORE`. Private keys are written 0600. The broker reads
them as PEM: its key and chain inline in ``server.properties`` (itself 0600), the CA as its truststore.

Clients trust the CA through ``SLUICEGATE_KAFKA_SSL_CAFILE=<data dir>/tls/ca.pem``; on the SSL listener
they also present their certificate, whose common name is their Kafka user (the ACLs are the same).
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sluicegate.secret_files import write_private

TLS_DIR = "tls"
BROKER = "broker"
"""The common name of the broker's certificate: ``User:broker``, a super user, between brokers on SSL."""
VALIDITY = timedelta(days=90)
RENEW_BEFORE = timedelta(days=7)
BROKER_NAMES = ("localhost",)
BROKER_IPS = ("127.0.0.1",)
PRINCIPAL_RULES = "RULE:^CN=([A-Za-z0-9._-]+)$/$1/,DEFAULT"
"""The SSL listener's principal is the common name of the client's certificate: ``CN=agent`` is
``User:agent``, as its SASL user would be."""


@dataclass(frozen=True)
class TlsFiles:
    """Where the certificates and keys of one broker's data dir are."""

    directory: Path

    @property
    def ca_file(self) -> Path:
        """The CA certificate clients trust (``SLUICEGATE_KAFKA_SSL_CAFILE``); not secret."""
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    def cert_file(self, name: str) -> Path:
        """The certificate of ``name`` (``broker`` or a user), with the CA's after it."""
        return self.directory / f"{name}.pem"

    def key_file(self, name: str) -> Path:
        """The private key of ``name`` (mode 0600)."""
        return self.directory / f"{name}.key"


def tls_files(data_dir: Path) -> TlsFiles:
    """The TLS files of a broker's data dir (made by :func:`ensure_certificates`)."""
    return TlsFiles(data_dir / TLS_DIR)


def _new_key() -> rsa.RSAPrivateKey:
    """RSA 2048: what every TLS stack here (Java 17's, OpenSSL's) reads."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key: rsa.RSAPrivateKey) -> str:
    """PKCS#8, unencrypted: the form Kafka's PEM key store reads without a key password."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey,
             now: datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + VALIDITY))


def _make_ca(files: TlsFiles, now: datetime) -> None:
    key = _new_key()
    name = _name("sluicegate local Kafka CA")
    cert = (_builder(name, name, key, now)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    write_private(files.ca_key, _key_pem(key))
    files.ca_file.write_text(_cert_pem(cert))


def _issue(files: TlsFiles, name: str, now: datetime, *, server: bool) -> None:
    """A certificate for ``name`` signed by the CA: the broker's names for a server, for client
    authentication only otherwise."""
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    ca_cert = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    key = _new_key()
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
    builder = (_builder(_name(name), ca_cert.subject, key, now)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
    if server:
        alternatives: list[x509.GeneralName] = [x509.DNSName(n) for n in BROKER_NAMES]
        alternatives += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in BROKER_IPS]
        builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    write_private(files.key_file(name), _key_pem(key))
    files.cert_file(name).write_text(_cert_pem(cert) + _cert_pem(ca_cert))


def _expires_soon(path: Path, now: datetime) -> bool:
    """``path`` is missing, unreadable, or its (first) certificate ends within :data:`RENEW_BEFORE`."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return True
    return cert.not_valid_after_utc - now < RENEW_BEFORE


def ensure_certificates(data_dir: Path, users: Iterable[str]) -> TlsFiles:
    """The CA, the broker's certificate (common name :data:`BROKER`: its own principal on the SSL
    listener) and one client certificate per user; each made when missing or expiring soon (a new CA
    re-issues them all)."""
    files = tls_files(data_dir)
    files.directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    renewed = _expires_soon(files.ca_file, now) or not files.ca_key.is_file()
    if renewed:
        _make_ca(files, now)
    if renewed or _expires_soon(files.cert_file(BROKER), now):
        _issue(files, BROKER, now, server=True)
    for user in users:
        if renewed or _expires_soon(files.cert_file(user), now):
            _issue(files, user, now, server=False)
    return files


def broker_properties(files: TlsFiles, *, client_auth: bool) -> list[str]:
    """The broker's TLS settings: its key and chain inline as PEM (their line breaks escaped as ``\\n``:
    Kafka's PEM reader needs them between certificates), the CA as its truststore; with ``client_auth``,
    every client shows a certificate signed by the CA and is the user its common name says."""
    key = files.key_file(BROKER).read_text().strip().replace("\n", "\\n")
    chain = files.cert_file(BROKER).read_text().strip().replace("\n", "\\n")
    lines = [
        "ssl.keystore.type=PEM",
        f"ssl.keystore.key={key}",
        f"ssl.keystore.certificate.chain={chain}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={files.ca_file}",
        "ssl.endpoint.identification.algorithm=https",
    ]
    if client_auth:
        lines += ["ssl.client.auth=required", f"ssl.principal.mapping.rules={PRINCIPAL_RULES}"]
    return lines


def client_context(ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None
                   ) -> ssl.SSLContext:
    """A client's TLS context for the local broker: trust its CA, present a certificate if given."""
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert_file is not None and key_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file))
    return context
