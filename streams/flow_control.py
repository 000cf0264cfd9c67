"""A fix for faust-streaming 0.15 dropping records when a restarted worker finishes table recovery.

faust's flow control clears every stream queue on *each* ``resume()``. After a restart with tables to
restore, recovery resumes the flow (to read the changelogs), then, when done, resumes the source
partitions, seeks them to their committed offsets and calls ``resume()`` again. Records fetched between
the seek and that second ``resume()`` were already in the agents' queues and are cleared, while the
consumer's position is past them: they are never handed to an agent. Seen as intents that never get a
decision after a SIGKILL (all of them when the backlog fits in that window).

Clearing is only needed when flow goes from suspended to active (a rebalance suspends and clears, and
events that slipped in during the suspension belong to the old assignment). A ``resume()`` while flow is
already active changes nothing here, so records queued for the current assignment are kept; the stages
are idempotent, so a record that is also re-fetched after the seek is answered from its record.
"""

from __future__ import annotations

import faust
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent


class ResumeKeepsQueues(FlowControlEvent):
    """Flow control whose ``resume()`` clears the queues only when flow was suspended."""

    def resume(self) -> None:
        if self.is_active():
            return
        super().resume()


class WorkerApp(faust.App):
    """faust's ``App`` with :class:`ResumeKeepsQueues` as its flow control."""

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return ResumeKeepsQueues(loop=self.loop)
