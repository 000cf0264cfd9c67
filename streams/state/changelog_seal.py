"""Authenticated changelog records: a worker restores only the state that workers wrote.

A table's changelog is where a worker taking a partition over gets its state from (windows, receipts,
approval entries). Whoever can produce to it could otherwise plant state (an approval entry closed as
approved, a window emptied). With trust on, every changelog record carries an ``sg-auth`` header: an
HMAC-SHA256, under a key derived from the ring for this purpose alone, over the topic, the partition,
the key and the value (or the mark of a delete). Restore skips, and logs, a record without a valid one,
so a forged record cannot stand in for the genuine record before it.

Not covered: a genuine record replayed later on its own partition (the attacker must first read the
changelog); only the workers' principal may read or write the changelog topics (``docs/security.md``).
"""

from __future__ import annotations

import struct
from typing import Any

from sluicegate.trust import AUTH_HEADER, KeyRing, authenticator, check, header, split_authenticator

PURPOSE = "changelog"
_DELETE = b"\x00"
_PUT = b"\x01"


def _message(topic: str, partition: int, key: bytes, value: bytes | None) -> bytes:
    """The bytes a record's authenticator covers: each field length-prefixed, so none can shift."""
    head = topic.encode()
    body = _DELETE if value is None else _PUT + value
    return b"".join((struct.pack(">HI", len(head), partition), head, struct.pack(">I", len(key)), key, body))


class ChangelogSeal:
    """Seals changelog records with the ring's current key; opens them under any key of the ring."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self.key_id = ring.current
        self.key = ring.derive(self.key_id, PURPOSE)

    def headers(self, topic: str, partition: int, key: bytes, value: bytes | None) -> list[tuple[str, bytes]]:
        """The headers of a changelog record."""
        return [(AUTH_HEADER, authenticator(self.key_id, self.key, _message(topic, partition, key, value)))]

    def check(self, topic: str, partition: int, record: Any) -> str:
        """The id of the key ``record`` (read from ``partition`` of ``topic``) was sealed with; raises
        :class:`sluicegate.trust.TrustError` unless a worker wrote it."""
        key_id, mac = split_authenticator(header(record.headers))
        check(self.ring.derive(key_id, PURPOSE), _message(topic, partition, record.key, record.value), mac)
        return key_id
