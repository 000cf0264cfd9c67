"""Every Kafka client a worker uses, built in one place with its settings named once.

A worker has four: the group consumer of the runner (every stage's input), the restorer (group-less,
reads changelogs when a partition is taken over), the producer (every output and changelog record) and
the policy reader (group-less, the policies topic from the beginning). Each takes the cluster's security
options (:meth:`sluicegate.settings.Settings.kafka_client_options`: SASL, TLS; empty for PLAINTEXT).
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from sluicegate.settings import PLAINTEXT, KafkaOptions

FETCH_MAX_WAIT_MS = 100
"""How long a fetch waits for records: bounds the delay of an intent behind fetches of idle partitions."""
MAX_RECORDS = 1_000
"""Records handled per batch (one lock, then a commit when due)."""
MAX_PARTITION_FETCH_BYTES = 128 * 1024
"""Records buffered per partition and fetch: the consumer hands out a partition's buffer whole before
the next one's, so a smaller buffer lets internal records (lease grants, feedback, verdicts) through a
backlog of intents sooner (1 MiB by default: a whole burst of one partition)."""
SESSION_TIMEOUT_MS = 6_000
"""Notice a dead worker within seconds (the broker's minimum)."""
HEARTBEAT_INTERVAL_MS = 1_000
REBALANCE_TIMEOUT_MS = 60_000
"""How long the group waits for a member to finish its revocation (a batch in hand, a take-over
stopping) before it drops it; aiokafka's default is the session timeout."""
PRODUCER_LINGER_MS = 0
"""Send decisions at once: a linger batches for throughput at the price of latency."""
PRODUCER_MAX_BATCH_BYTES = 64 * 1024
PRODUCER_ACKS = "all"
"""Every in-sync replica acknowledges: a decision (and the changelog record behind a limit) survives a
leader failover. On a single broker this costs nothing over acks=1."""


def producer(bootstrap: str, options: KafkaOptions = PLAINTEXT) -> AIOKafkaProducer:
    """The worker's one producer: outputs and changelog records, flushed before every commit."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks=PRODUCER_ACKS, linger_ms=PRODUCER_LINGER_MS,
                            max_batch_size=PRODUCER_MAX_BATCH_BYTES, **options)


def group_consumer(bootstrap: str, group: str, options: KafkaOptions = PLAINTEXT) -> AIOKafkaConsumer:
    """The runner's consumer: offsets committed by hand, and the range assignor, so partition N of every
    topic the worker reads goes to the same worker (with partition N of every table)."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
        partition_assignment_strategy=(RangePartitionAssignor,),
        session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        rebalance_timeout_ms=REBALANCE_TIMEOUT_MS, **options)


def restore_consumer(bootstrap: str, options: KafkaOptions = PLAINTEXT) -> AIOKafkaConsumer:
    """Reads changelogs: no group, and no automatic offset reset (records that vanish under it are an
    error, not a silent skip)."""
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                            auto_offset_reset="none", **options)


def reader(bootstrap: str, options: KafkaOptions = PLAINTEXT) -> AIOKafkaConsumer:
    """A group-less reader of a whole topic (the policies)."""
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                            fetch_max_wait_ms=FETCH_MAX_WAIT_MS, **options)
