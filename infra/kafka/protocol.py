"""A real Kafka Metadata request over a plain socket: the launcher's readiness probe."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

METADATA_API_KEY = 3
METADATA_VERSION = 4  # non-flexible; supported from Kafka 1.0 through 4.x
_CLIENT_ID = b"sluicegate-probe"


class ProtocolError(Exception):
    """The peer answered, but not with a well-formed Kafka Metadata response."""


@dataclass(frozen=True)
class BrokerInfo:
    """One broker as listed in a Metadata response."""

    node_id: int
    host: str
    port: int


@dataclass(frozen=True)
class MetadataAnswer:
    """The cluster part of a Metadata response (no topics were asked for)."""

    cluster_id: str | None
    controller_id: int
    brokers: tuple[BrokerInfo, ...]


def encode_metadata_request(correlation_id: int) -> bytes:
    """A size-prefixed Metadata v4 request for no topics (request header v1)."""
    header = struct.pack(">hhih", METADATA_API_KEY, METADATA_VERSION, correlation_id, len(_CLIENT_ID))
    body = struct.pack(">ib", 0, 0)  # topics: empty array; allow_auto_topic_creation: false
    payload = header + _CLIENT_ID + body
    return struct.pack(">i", len(payload)) + payload


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self._at + size > len(self._data):
            raise ProtocolError("truncated Metadata response")
        (value,) = struct.unpack_from(fmt, self._data, self._at)
        self._at += size
        return int(value)

    def string(self) -> str | None:
        length = self.take(">h")
        if length < 0:
            return None
        if self._at + length > len(self._data):
            raise ProtocolError("truncated string in Metadata response")
        raw = self._data[self._at : self._at + length]
        self._at += length
        return raw.decode("utf-8")


def decode_metadata_response(payload: bytes, correlation_id: int) -> MetadataAnswer:
    """Parse a Metadata v4 response body (without its size prefix) up to the controller id."""
    reader = _Reader(payload)
    if reader.take(">i") != correlation_id:
        raise ProtocolError("Metadata response has the wrong correlation id")
    reader.take(">i")  # throttle_time_ms
    count = reader.take(">i")
    if count < 0 or count > 10_000:
        raise ProtocolError(f"implausible broker count {count}")
    brokers = []
    for _ in range(count):
        node_id = reader.take(">i")
        host = reader.string()
        port = reader.take(">i")
        reader.string()  # rack
        if host is None:
            raise ProtocolError("broker without a host in Metadata response")
        brokers.append(BrokerInfo(node_id, host, port))
    cluster_id = reader.string()
    controller_id = reader.take(">i")
    return MetadataAnswer(cluster_id, controller_id, tuple(brokers))


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ProtocolError("connection closed before a full Metadata response arrived")
        chunks.extend(chunk)
    return bytes(chunks)


def request_metadata(host: str, port: int, timeout_s: float = 2.0, correlation_id: int = 1) -> MetadataAnswer:
    """Ask the broker at ``host:port`` for cluster metadata; raises OSError or ProtocolError."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(encode_metadata_request(correlation_id))
        (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
        if size <= 0 or size > 16 * 1024 * 1024:
            raise ProtocolError(f"implausible Metadata response size {size}")
        return decode_metadata_response(_recv_exactly(sock, size), correlation_id)
