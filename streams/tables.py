"""The worker's faust tables: rocksdict on disk, a compacted changelog topic each.

``shared-state`` is co-partitioned with the shared-limits topic; ``approval-state`` with the approvals
topic (and approval-control). Both map str keys (see :mod:`streams.state`) to raw bytes values. Stage 1's
``agent-state`` table is not a faust table (see :mod:`streams.decider`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust


@dataclass(frozen=True, slots=True)
class Tables:
    """The state tables of a worker."""

    shared_state: Any
    approval_state: Any

    def changelog_topics(self) -> list[str]:
        """The tables' changelog topics (their partition N restores the table's partition N)."""
        return [table.changelog_topic.get_topic_name()
                for table in (self.shared_state, self.approval_state)]


def make_tables(app: faust.App, partitions: int) -> Tables:
    """Declare the tables on ``app``."""

    def table(name: str, help_: str) -> Any:
        # bytes -> faust's "raw" codec for keys and values (str keys are encoded as UTF-8)
        return app.Table(name, default=None, partitions=partitions, key_type=bytes, value_type=bytes,
                         help=help_)

    return Tables(
        shared_state=table("shared-state", "Windows of limits keyed by fleet, tool, target or role."),
        approval_state=table("approval-state", "Pending and recently closed approvals, by request id."),
    )
