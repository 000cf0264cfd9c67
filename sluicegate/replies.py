"""Reply partitions, the pure half (docs/replies.md): which key reaches a partition of the replies topic,
what a lease claim is, and who holds each partition according to the lease log.

An agent process that leases partition ``p`` of the replies topic names ``reply_key_for(p, partitions)``
in its intents; the worker publishes each decision keyed by that, so Kafka's default partitioner puts it
on ``p``, which the process alone (or with at most ``sharing - 1`` others) reads.

Leases live on a compacted, single-partition topic keyed ``<partition>/<holder>``. A claim is live until
``ttl_ms`` after its record's (broker, ``LogAppendTime``) timestamp; a holder renews by writing it again
with ``since`` set to the offset of its first claim, and releases with a tombstone. On each partition
the live claims ranked by ``since`` (a new claim ranks by its own offset) hold it, the first ``sharing``
of them; every reader of the log applies the same rule to the same records, so all agree.

The lease decides only *cost*: which records a process reads. No decision is lost whatever the leases
say (a process positions a partition at its end before publishing an intent that names it, and reads it
until the last call naming it is answered), and none is believed that is not its own (decisions are
authenticated with the agent's key and bound to its request and action).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from pydantic import Field

from schemas.common import WireModel
from sluicegate.routing import partition_for

DEFAULT_REPLY_PARTITIONS = 12
"""Partitions of the replies topic the workers create (size it: at least processes / sharing)."""
DEFAULT_REPLY_SHARING = 2
"""How many agent processes may hold one reply partition (each then reads about ``sharing`` decisions
per decision it needs)."""
DEFAULT_LEASE_TTL_MS = 60_000
"""How long a claim lasts without renewal (renewed every third of it)."""
_KEY_SEARCH_LIMIT = 1 << 24


def reply_key_for(partition: int, partitions: int) -> str:
    """The first key ``r<partition>.<n>`` that Kafka's default partitioner puts on ``partition`` of a
    topic with ``partitions`` partitions (expected ``partitions`` tries)."""
    if not 0 <= partition < partitions:
        raise ValueError(f"partition {partition} is not one of 0..{partitions - 1}")
    for n in range(_KEY_SEARCH_LIMIT):
        key = f"r{partition}.{n}"
        if partition_for(key, partitions) == partition:
            return key
    raise ValueError(f"no reply key found for partition {partition} of {partitions}")  # pragma: no cover


class ReplyLeaseClaim(WireModel):
    """One claim (or renewal) of a reply partition by an agent process."""

    partition: int = Field(ge=0)
    holder: str = Field(min_length=1, max_length=128)
    ttl_ms: int = Field(gt=0, le=24 * 3_600_000)
    since: int | None = Field(default=None, ge=0, description="Offset of the holder's first claim.")


def lease_key(partition: int, holder: str) -> bytes:
    """The lease topic's key of ``holder``'s claim on ``partition``."""
    return f"{partition}/{holder}".encode()


@dataclass(frozen=True, slots=True)
class LiveClaim:
    """A claim as the log holds it."""

    holder: str
    rank: int
    """``since``, or the record's own offset for a first claim."""
    timestamp_ms: int
    ttl_ms: int

    def live_at(self, at_ms: int) -> bool:
        return at_ms < self.timestamp_ms + self.ttl_ms


@dataclass
class LeaseBook:
    """The state of the lease log, as read so far (a pure fold over its records)."""

    partitions: int
    sharing: int = DEFAULT_REPLY_SHARING
    claims: dict[tuple[int, str], LiveClaim] = field(default_factory=dict)
    skipped: int = 0
    """Records that are not claims of a partition of this topic (ignored)."""

    def apply(self, offset: int, timestamp_ms: int, key: bytes | None, value: bytes | None) -> None:
        """Fold one record of the lease topic in."""
        if value is None:
            self._release(key)
            return
        try:
            claim = ReplyLeaseClaim.model_validate_json(value)
        except ValueError:
            self.skipped += 1
            return
        if claim.partition >= self.partitions or key != lease_key(claim.partition, claim.holder):
            self.skipped += 1
            return
        rank = offset if claim.since is None else min(claim.since, offset)
        self.claims[(claim.partition, claim.holder)] = LiveClaim(claim.holder, rank, timestamp_ms,
                                                                 claim.ttl_ms)

    def _release(self, key: bytes | None) -> None:
        partition, _, holder = (key or b"").decode(errors="replace").partition("/")
        if partition.isdigit():
            self.claims.pop((int(partition), holder), None)

    def holders(self, partition: int, at_ms: int) -> list[str]:
        """Who holds ``partition`` at ``at_ms``: the first ``sharing`` live claims by rank."""
        live = sorted((c for (p, _), c in self.claims.items() if p == partition and c.live_at(at_ms)),
                      key=lambda c: c.rank)
        return [c.holder for c in live[: self.sharing]]

    def holds(self, partition: int, holder: str, at_ms: int) -> bool:
        return holder in self.holders(partition, at_ms)

    def rank_of(self, partition: int, holder: str) -> int | None:
        claim = self.claims.get((partition, holder))
        return None if claim is None else claim.rank

    def load(self, at_ms: int) -> list[int]:
        """How many holders each partition has at ``at_ms``."""
        counts = [0] * self.partitions
        for (p, _), claim in self.claims.items():
            if claim.live_at(at_ms):
                counts[p] += 1
        return [min(n, self.sharing) for n in counts]

    def pick(self, at_ms: int, rng: random.Random, avoid: frozenset[int] = frozenset()) -> int | None:
        """A partition to claim: one of the least held with a free place (random among them, so racing
        claimants spread), None when every place is taken."""
        load = self.load(at_ms)
        free = [p for p, n in enumerate(load) if n < self.sharing and p not in avoid]
        if not free:
            return None
        least = min(load[p] for p in free)
        return rng.choice([p for p in free if load[p] == least])
