"""The engine's StateStore on a deciding stage's table (a
:class:`streams.state.changelog_store.ChangelogStore`): window and history states as compact bytes.

One table per stage holds everything that stage owns, under key prefixes: ``w|`` window states,
``h|`` histories, ``q|`` sequence-rule trails, ``d|`` idempotency records (see :mod:`streams.messages`).
Keeping them in one table keeps them in one changelog partition, so Kafka's per-partition order makes
"the idempotency record was persisted" imply "the state changes written before it were persisted"
after a crash.

Idempotent counting. A crash can persist a window change without the idempotency record written
after it (the changelog loses a suffix); the redelivered request would then be counted twice. So a
window value also carries the tokens (request-id hashes) of the newest :data:`MAX_TOKENS` requests
counted in it, and :meth:`TableState.add_once` skips a request already there. Value layout:
``u32 n, n x i64 tokens, WindowState.to_bytes()``.

Values are decoded on every read (no decoded cache: it would need invalidating on rebalance and
recovery, and decoding is small next to the rest of a decision).
"""

from __future__ import annotations

import hashlib
import struct
from array import array
from collections.abc import MutableMapping
from uuid import UUID

from streams.engine import WindowChange
from streams.engine.state import HistoryState, TrailState, WindowState

WINDOW_PREFIX = "w|"
HISTORY_PREFIX = "h|"
TRAIL_PREFIX = "q|"
RECEIPT_PREFIX = "d|"
MAX_TOKENS = 4096
_COUNT = struct.Struct("<I")

BytesTable = MutableMapping[str, bytes]
"""What this module needs of a table (a plain dict works in unit tests)."""


def keys_with_prefix(table: BytesTable, prefix: str) -> list[str]:
    """The keys of ``table`` starting with ``prefix`` (a changelog store finds them without a scan)."""
    by_prefix = getattr(table, "keys_with_prefix", None)
    return list(by_prefix(prefix) if by_prefix is not None else (k for k in table if k.startswith(prefix)))


class TableState:
    """:class:`streams.engine.state.StateStore` over a str -> bytes table."""

    __slots__ = ("table",)

    def __init__(self, table: BytesTable) -> None:
        self.table = table

    def _read(self, key: str) -> tuple[array[int], WindowState] | None:
        raw = self.table.get(WINDOW_PREFIX + key)
        if raw is None:
            return None
        (count,) = _COUNT.unpack_from(raw)
        end = _COUNT.size + 8 * count
        tokens = array("q")
        tokens.frombytes(raw[_COUNT.size:end])
        return tokens, WindowState.from_bytes(raw[end:])

    def _write(self, key: str, tokens: array[int], state: WindowState) -> None:
        if state.is_empty():
            self.table.pop(WINDOW_PREFIX + key, None)
            return
        del tokens[:-MAX_TOKENS]
        self.table[WINDOW_PREFIX + key] = _COUNT.pack(len(tokens)) + tokens.tobytes() + state.to_bytes()

    def get_window(self, key: str) -> WindowState | None:
        """The window state at ``key``, or None."""
        found = self._read(key)
        return None if found is None else found[1]

    def put_window(self, key: str, state: WindowState) -> None:
        """Store the window state at ``key`` (an empty window is deleted)."""
        found = self._read(key)
        self._write(key, found[0] if found else array("q"), state)

    def add_once(self, change: WindowChange, request_id: UUID, agent: str = "") -> bool:
        """Count ``change`` for ``request_id`` (of ``agent``, on a window shared by agents) unless that
        request is already counted there."""
        token = _token(request_id, agent)
        found = self._read(change.key)
        tokens, window = found if found is not None else (array("q"), WindowState())
        if token in tokens:
            return False
        window.add(change.at_ms, change.value, change.window_ms, change.keep)
        tokens.append(token)
        self._write(change.key, tokens, window)
        return True

    def get_history(self, key: str) -> HistoryState | None:
        """The (agent, tool) history at ``key``, or None."""
        raw = self.table.get(HISTORY_PREFIX + key)
        return None if raw is None else HistoryState.from_bytes(raw)

    def put_history(self, key: str, state: HistoryState) -> None:
        """Store the history at ``key``."""
        self.table[HISTORY_PREFIX + key] = state.to_bytes()

    def get_trail(self, key: str) -> TrailState | None:
        """The sequence-rule trail at ``key``, or None."""
        raw = self.table.get(TRAIL_PREFIX + key)
        return None if raw is None else TrailState.from_bytes(raw)

    def put_trail(self, key: str, state: TrailState) -> None:
        """Store the trail at ``key`` (recording an action twice changes nothing: no tokens needed)."""
        self.table[TRAIL_PREFIX + key] = state.to_bytes()

    def hold_trail(self, key: str, at_ms: int, request_id: UUID, within_ms: int) -> None:
        """Hold ``request_id``'s earlier action on the trail at ``key`` until its final decision."""
        trail = self.get_trail(key) or TrailState()
        trail.hold(at_ms, _token(request_id, ""), within_ms)
        self.put_trail(key, trail)

    def release_trail(self, key: str, request_id: UUID) -> None:
        """Drop ``request_id``'s hold on the trail at ``key`` (none: no change)."""
        trail = self.get_trail(key)
        if trail is not None and trail.held_tokens:
            trail.release(_token(request_id, ""))
            self.put_trail(key, trail)

    def release(
        self, key: str, at_ms: int, value: float | None, request_id: UUID | None = None, agent: str = "",
    ) -> bool:
        """Undo one counted entry (time ``at_ms``, ``value``) and forget ``request_id``'s token.

        False when no such entry is there, or ``request_id``'s token is not (released already, or counted
        more than :data:`MAX_TOKENS` entries ago: kept, stricter).
        """
        found = self._read(key)
        if found is None:
            return False
        tokens, window = found
        if request_id is not None:
            token = _token(request_id, agent)
            if token not in tokens:  # released already: a settlement replayed after a crash undoes nothing
                return False
            tokens = array("q", [t for t in tokens if t != token])
        if not window.remove(at_ms, value):
            return False
        self._write(key, tokens, window)
        return True


def _token(request_id: UUID, agent: str) -> int:
    """A request's token in a window. On a window shared by agents it is the agent's request: another
    agent that reuses the id is another request (agents choose their request ids)."""
    if not agent:
        return request_id.int & 0x7FFF_FFFF_FFFF_FFFF
    digest = hashlib.blake2b(agent.encode() + request_id.bytes, digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF
