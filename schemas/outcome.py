"""What happened when an allowed tool call ran."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import Field

from schemas.common import SCHEMA_VERSION, UtcDatetime, WireModel


class OutcomeStatus(StrEnum):
    """How the tool call ended."""

    SUCCESS = "success"
    ERROR = "error"


class ExecutionOutcome(WireModel):
    """Reported by the SDK after a guarded tool ran."""

    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: UUID
    agent_id: str
    tool: str
    status: OutcomeStatus
    error: str | None = Field(default=None, max_length=4000)
    duration_ms: float = Field(ge=0)
    finished_at: UtcDatetime
    fail_open: bool = Field(
        default=False, description="True when the tool ran without a decision (fail-open tool)."
    )
