"""Credentials and message authentication: who may say what on sluicegate's topics.

One deployment secret, a *key ring* (key id -> 32 random bytes; the first is current, the others are
still accepted while credentials move to it), is held by the workers only. Every other key is derived
from it with HMAC-SHA256 over a purpose and a name, so a worker recomputes any of them from what a
message claims, and no registry of agents or reviewers is needed:

- an *agent* key (``agent`` + id, role, environment, owner) authenticates the agent's intents and the
  workers' decisions to it; verified by the workers and by the agent;
- a *reviewer* key (``reviewer`` + name) authenticates the reviewer's verdicts (the CLI);
- a *bot* key (``bot`` + name) authenticates the verdicts of the users a Slack bot maps;
- a *publisher* key (``publisher`` + name) authenticates policies;
- the *internal* key (``internal``) authenticates the hops between the workers' stages.

An agent's identity fields are part of its key, so an intent that claims another id, role, environment
or owner fails verification. Authenticators travel in the record header :data:`AUTH_HEADER` as
``<key id>.<base64url HMAC-SHA256 of the record value>``: the exact bytes produced, so no
canonicalisation is needed and producers in any language can make them. Approval requests, which the
Slack bot and the CLI must check without being able to forge them, are signed by the workers with
Ed25519 instead (:class:`RequestSigner`). ``docs/security.md`` has the threat model and the costs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

AUTH_HEADER = "sg-auth"
"""The record header holding a message's authenticator."""
SIGNER_HEADER = "sg-signer"
"""The record header naming who authenticated a verdict or a policy (``reviewer:<name>``, ...)."""
KEY_BYTES = 32
_VERSION = b"sluicegate/trust/v1"
_BLOCK = 64
"""SHA-256's block size: HMAC pads its key to it."""
_IPAD = bytes(byte ^ 0x36 for byte in range(256))
_OPAD = bytes(byte ^ 0x5C for byte in range(256))


class TrustError(ValueError):
    """A credential or key that cannot be read, or a message that does not verify."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TrustError(f"not base64url: {text[:16]}...") from exc


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The deployment's master keys by id; the first is the current one."""

    keys: tuple[tuple[str, bytes], ...] = field(repr=False)

    @classmethod
    def generate(cls, key_id: str | None = None) -> KeyRing:
        return cls(((key_id or secrets.token_hex(4), secrets.token_bytes(KEY_BYTES)),))

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """``kid:base64url,kid:base64url`` (current first)."""
        keys: list[tuple[str, bytes]] = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            key_id, sep, encoded = item.partition(":")
            key = _unb64(encoded) if sep else b""
            if not key_id or len(key) != KEY_BYTES:
                raise TrustError(f"a key ring entry is <id>:<32 bytes in base64url>, not {item[:12]}...")
            keys.append((key_id, key))
        if not keys:
            raise TrustError("the key ring is empty")
        return cls(tuple(keys))

    def rotated(self, key_id: str | None = None) -> KeyRing:
        """A ring whose current key is new, still accepting the old ones."""
        return KeyRing((*KeyRing.generate(key_id).keys, *self.keys))

    def without(self, key_id: str) -> KeyRing:
        """A ring that no longer accepts ``key_id``."""
        return KeyRing(tuple((k, v) for k, v in self.keys if k != key_id))

    def __str__(self) -> str:
        return ",".join(f"{key_id}:{_b64(key)}" for key_id, key in self.keys)

    @property
    def current(self) -> str:
        return self.keys[0][0]

    def master(self, key_id: str) -> bytes:
        for known, key in self.keys:
            if known == key_id:
                return key
        raise TrustError(f"unknown key id {key_id!r}")

    def derive(self, key_id: str, purpose: str, *names: str) -> bytes:
        """The key for ``purpose`` and ``names`` under master ``key_id``."""
        return _derive(self.master(key_id), purpose, names)


@lru_cache(maxsize=65_536)
def _derive(master: bytes, purpose: str, names: tuple[str, ...]) -> bytes:
    message = b"\x1f".join([_VERSION, purpose.encode(), *(name.encode() for name in names)])
    return hmac.digest(master, message, "sha256")


def agent_names(agent_id: str, role: str, environment: str, owner: str | None) -> tuple[str, ...]:
    """What an agent key is bound to."""
    return (agent_id, role, environment, owner or "")


@lru_cache(maxsize=65_536)
def _pads(key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256's inner and outer hash states for ``key``, made once per key: a message's MAC then
    costs two copies and two updates, about a third of a new HMAC context's cost."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    block = key.ljust(_BLOCK, b"\0")
    return hashlib.sha256(block.translate(_IPAD)), hashlib.sha256(block.translate(_OPAD))


def mac(key: bytes, value: bytes) -> bytes:
    """HMAC-SHA256 of ``value`` under ``key`` (RFC 2104: equal to ``hmac.digest(key, value, "sha256")``)."""
    inner, outer = _pads(key)
    inner = inner.copy()
    inner.update(value)
    outer = outer.copy()
    outer.update(inner.digest())
    return outer.digest()  # type: ignore[no-any-return]


def authenticator(key_id: str, key: bytes, value: bytes) -> bytes:
    """The header value authenticating ``value`` with ``key``."""
    return key_id.encode() + b"." + base64.urlsafe_b64encode(mac(key, value)).rstrip(b"=")


def split_authenticator(header: bytes | None) -> tuple[str, bytes]:
    """(key id, MAC) of a header value; TrustError when missing or malformed."""
    if not header:
        raise TrustError("no authenticator")
    key_id, sep, mac = header.decode("ascii", "replace").partition(".")
    if not sep or not key_id:
        raise TrustError("malformed authenticator")
    return key_id, _unb64(mac)


def check(key: bytes, value: bytes, expected: bytes) -> None:
    """Raise TrustError unless ``expected`` (a MAC) authenticates ``value`` under ``key`` (constant time)."""
    if not hmac.compare_digest(mac(key, value), expected):
        raise TrustError("wrong authenticator")


def verify(ring: KeyRing, header: bytes | None, value: bytes, purpose: str, *names: str) -> None:
    """Raise TrustError unless ``header`` (an :data:`AUTH_HEADER` value) authenticates ``value`` under the
    key of ``purpose`` and ``names`` derived from the ring key it names. The MAC is compared as the
    base64url text it travels as (constant time), so nothing is decoded."""
    if not header:
        raise TrustError("no authenticator")
    key_id, sep, text = header.partition(b".")
    if not sep or not key_id:
        raise TrustError("malformed authenticator")
    key = ring.derive(key_id.decode("ascii", "replace"), purpose, *names)
    if not hmac.compare_digest(base64.urlsafe_b64encode(mac(key, value)).rstrip(b"="), text.rstrip(b"=")):
        raise TrustError("wrong authenticator")


def header(headers: object, name: str = AUTH_HEADER) -> bytes | None:
    """A header's value from a Kafka record's headers (a sequence of (name, bytes))."""
    for item in headers or ():  # type: ignore[attr-defined]
        if item[0] == name:
            return bytes(item[1]) if item[1] is not None else None
    return None


# -- credentials as they are handed out (one SLUICEGATE_...=... line each) ---------------------------------


@dataclass(frozen=True, slots=True)
class AgentCredential:
    """An agent's identity and its key: what its SDK signs intents and verifies decisions with."""

    key_id: str
    agent_id: str
    role: str
    environment: str
    owner: str | None
    key: bytes = field(repr=False)

    @classmethod
    def issue(cls, ring: KeyRing, agent_id: str, role: str, environment: str,
              owner: str | None = None) -> AgentCredential:
        key_id = ring.current
        key = ring.derive(key_id, "agent", *agent_names(agent_id, role, environment, owner))
        return cls(key_id, agent_id, role, environment, owner, key)

    def __str__(self) -> str:
        identity = {"id": self.agent_id, "role": self.role, "env": self.environment, "owner": self.owner}
        body = _b64(json.dumps(identity, separators=(",", ":")).encode())
        return f"sga1.{self.key_id}.{body}.{_b64(self.key)}"

    @classmethod
    def parse(cls, text: str) -> AgentCredential:
        parts = text.strip().split(".")
        if len(parts) != 4 or parts[0] != "sga1":
            raise TrustError("an agent credential looks like sga1.<key id>.<identity>.<key>")
        try:
            identity = json.loads(_unb64(parts[2]))
            return cls(parts[1], str(identity["id"]), str(identity["role"]), str(identity["env"]),
                       identity.get("owner"), _unb64(parts[3]))
        except (KeyError, TypeError, ValueError) as exc:
            raise TrustError(f"unreadable agent credential: {exc}") from exc

    def authenticate(self, value: bytes) -> bytes:
        return authenticator(self.key_id, self.key, value)


@dataclass(frozen=True, slots=True)
class SignerCredential:
    """A person's or service's key: a reviewer, the Slack bot or a policy publisher."""

    kind: str
    """``reviewer``, ``bot`` or ``publisher``."""
    key_id: str
    name: str
    key: bytes = field(repr=False)

    @classmethod
    def issue(cls, ring: KeyRing, kind: str, name: str) -> SignerCredential:
        return cls(kind, ring.current, name, ring.derive(ring.current, kind, name))

    def __str__(self) -> str:
        return f"sgs1.{self.kind}.{self.key_id}.{_b64(self.name.encode())}.{_b64(self.key)}"

    @classmethod
    def parse(cls, text: str, kind: str) -> SignerCredential:
        parts = text.strip().split(".")
        if len(parts) != 5 or parts[0] != "sgs1":
            raise TrustError(f"a {kind} credential looks like sgs1.{kind}.<key id>.<name>.<key>")
        if parts[1] != kind:
            raise TrustError(f"this is a {parts[1]} credential, not a {kind} one")
        return cls(kind, parts[2], _unb64(parts[3]).decode(), _unb64(parts[4]))

    @property
    def signer(self) -> bytes:
        """The :data:`SIGNER_HEADER` value."""
        return f"{self.kind}:{self.name}".encode()

    def headers(self, value: bytes) -> list[tuple[str, bytes]]:
        """The headers of a record of ``value`` signed with this credential."""
        return [(AUTH_HEADER, authenticator(self.key_id, self.key, value)), (SIGNER_HEADER, self.signer)]


def verify_signed(ring: KeyRing, headers: object, value: bytes, kinds: tuple[str, ...]) -> tuple[str, str]:
    """(kind, name) of who signed a verdict or policy record; TrustError when it does not verify."""
    signer = header(headers, SIGNER_HEADER)
    if not signer:
        raise TrustError("unsigned")
    kind, sep, name = signer.decode("utf-8", "replace").partition(":")
    if not sep or kind not in kinds or not name:
        raise TrustError(f"not signed by a {' or '.join(kinds)}")
    verify(ring, header(headers), value, kind, name)
    return kind, name


# -- approval requests: signed by the workers, checked by anyone ------------------------------------------


class RequestSigner:
    """The workers' Ed25519 key for approval requests."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private

    @classmethod
    def generate(cls) -> RequestSigner:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def parse(cls, text: str) -> RequestSigner:
        raw = _unb64(text.strip())
        if len(raw) != KEY_BYTES:
            raise TrustError("the signing key must be 32 bytes base64url")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def __str__(self) -> str:
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        return _b64(self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))

    @property
    def public(self) -> str:
        """The verifiers' setting (``SLUICEGATE_TRUST_PUBLIC_KEY``)."""
        return _b64(self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign(self, value: bytes) -> bytes:
        """The :data:`AUTH_HEADER` value of an approval request."""
        return f"ed25519.{_b64(self.private.sign(value))}".encode()


def verify_request(public_key: str, headers: object, value: bytes) -> None:
    """Raise TrustError unless the record was signed by the workers' request key."""
    key_id, signature = split_authenticator(header(headers))
    if key_id != "ed25519":
        raise TrustError("not signed by the workers")
    try:
        Ed25519PublicKey.from_public_bytes(_unb64(public_key)).verify(signature, value)
    except (InvalidSignature, ValueError) as exc:
        raise TrustError("not signed by the workers") from exc


__all__ = [
    "AUTH_HEADER", "SIGNER_HEADER", "AgentCredential", "KeyRing", "RequestSigner", "SignerCredential",
    "TrustError", "agent_names", "authenticator", "check", "header", "mac", "split_authenticator",
    "verify", "verify_request", "verify_signed",
]
