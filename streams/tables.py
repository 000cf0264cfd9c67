"""The worker's faust table: ``approval-state``, rocksdict on disk with a compacted changelog topic,
co-partitioned with the approvals topic (and approval-control). It maps str keys to raw bytes values.

The deciding stages' tables (``agent-state``, ``shared-state``) are not faust tables: see
:mod:`streams.runtime.runner` and :mod:`streams.state.changelog_store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust


@dataclass(frozen=True, slots=True)
class Tables:
    """The faust tables of a worker."""

    approval_state: Any

    def changelog_topics(self) -> list[str]:
        """The tables' changelog topics (their partition N restores the table's partition N)."""
        return [self.approval_state.changelog_topic.get_topic_name()]


def make_tables(app: faust.App, partitions: int) -> Tables:
    """Declare the tables on ``app``."""
    # bytes -> faust's "raw" codec for keys and values (str keys are encoded as UTF-8)
    return Tables(approval_state=app.Table(
        "approval-state", default=None, partitions=partitions, key_type=bytes, value_type=bytes,
        help="Pending and recently closed approvals, by request id."))
