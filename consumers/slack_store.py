"""What the Slack bot has posted: a small append-only JSON-lines file, so restarts never repost."""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path
from uuid import UUID

from pydantic import BaseModel, ConfigDict, ValidationError

from consumers.slack_blocks import MessageStatus
from schemas import ApprovalRequest

log = logging.getLogger(__name__)


class PostedMessage(BaseModel):
    """One handled request: where its message is (``ts`` None when not posted) and its status."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request: ApprovalRequest
    channel: str | None = None
    ts: str | None = None
    status: MessageStatus = MessageStatus()
    note: str | None = None


class PostedStore:
    """Request id -> PostedMessage, the last line per request wins.

    Compacted when opened; requests whose deadline is before ``forget_before`` are dropped then (a
    redelivered request past its deadline is not posted anyway).
    """

    def __init__(self, path: Path, forget_before: datetime | None = None) -> None:
        self._path = path
        self._items: dict[UUID, PostedMessage] = {}
        self._unsaved: dict[UUID, PostedMessage] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._load()
            if forget_before is not None:
                self._items = {k: v for k, v in self._items.items() if v.request.deadline_at >= forget_before}
            self._compact()

    def _load(self) -> None:
        with self._path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    item = PostedMessage.model_validate_json(line)
                except ValidationError as exc:
                    log.warning("%s:%d: skipping a torn or invalid line: %s", self._path, number, exc)
                    continue
                self._items[item.request.request_id] = item

    def _compact(self) -> None:
        tmp = self._path.with_suffix(self._path.suffix + ".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            handle.writelines(item.model_dump_json() + "\n" for item in self._items.values())
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self._path)

    def get(self, request_id: UUID) -> PostedMessage | None:
        return self._items.get(request_id)

    def __contains__(self, request_id: UUID) -> bool:
        return request_id in self._items

    def put(self, item: PostedMessage) -> None:
        """Record ``item``: at once in memory (a retry of its record does not post again), durably (fsync)
        by this call or, when the disk fails, by a later :meth:`flush`; raises OSError then."""
        self._items[item.request.request_id] = item
        self._unsaved[item.request.request_id] = item
        self.flush()

    def flush(self) -> None:
        """Write what is recorded but not durable yet (fsync) before the caller commits its Kafka offset;
        raises OSError, keeping it for the next call, when the disk fails."""
        if not self._unsaved:
            return
        with self._path.open("a", encoding="utf-8") as handle:
            handle.writelines(item.model_dump_json() + "\n" for item in self._unsaved.values())
            handle.flush()
            os.fsync(handle.fileno())
        self._unsaved.clear()
