"""The one-step upgrade from workers that ran a consumer group per stage (``sluicegate worker --upgrade``).

Up to this release the decide and shared stages read with the groups ``<app id>-decide`` and
``<app id>-shared``, and faust's consumer read the approvals with ``<app id>``. Now every stage reads
with ``<app id>``. With every worker stopped, the upgrade copies the committed offsets of the two
per-stage groups into it, so no intent is decided again; the approvals' offsets are already there. A
worker refuses to start while a per-stage group still holds offsets the new group lacks
(:func:`legacy_groups`): starting from the beginning of the intents would decide history again.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from sluicegate.settings import PLAINTEXT, KafkaOptions

LEGACY_SUFFIXES = ("-decide", "-shared")


async def _offsets(admin: AIOKafkaAdminClient, group: str) -> dict[TopicPartition, int]:
    found = await admin.list_consumer_group_offsets(group)
    return {tp: meta.offset for tp, meta in found.items() if meta is not None and meta.offset >= 0}


async def _missing(bootstrap: str, group: str, options: KafkaOptions) -> dict[TopicPartition, int]:
    """Offsets of the per-stage groups that ``group`` does not have."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **options)
    await admin.start()
    try:
        known = {str(listed[0]) for listed in await admin.list_consumer_groups()}
        legacy = [group + suffix for suffix in LEGACY_SUFFIXES if group + suffix in known]
        if not legacy:  # a new deployment (maybe no offsets topic yet) or upgraded already
            return {}
        current = await _offsets(admin, group) if group in known else {}
        missing: dict[TopicPartition, int] = {}
        for old in legacy:
            for tp, offset in (await _offsets(admin, old)).items():
                if tp not in current:
                    missing[tp] = offset
        return missing
    finally:
        await admin.close()


async def legacy_groups(bootstrap: str, group: str, options: KafkaOptions = PLAINTEXT) -> str:
    """Why the worker must not start yet (the upgrade is due), or ""."""
    missing = await _missing(bootstrap, group, options)
    if not missing:
        return ""
    topics = ", ".join(sorted({tp.topic for tp in missing}))
    return (f"the consumer groups {', '.join(group + s for s in LEGACY_SUFFIXES)} hold offsets of {topics} "
            f"that {group} lacks: stop every worker, run `sluicegate worker --upgrade`, then start them")


async def upgrade(bootstrap: str, group: str, options: KafkaOptions = PLAINTEXT) -> dict[TopicPartition, int]:
    """Copy the per-stage groups' offsets into ``group`` (every worker stopped); the offsets copied."""
    missing = await _missing(bootstrap, group, options)
    if not missing:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                **options)
    await consumer.start()
    try:
        consumer.assign(list(missing))
        await consumer.commit(missing)
    finally:
        await consumer.stop()
    return missing
