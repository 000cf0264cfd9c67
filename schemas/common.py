"""Closed sets and shared building blocks of the wire contract."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict

SCHEMA_VERSION: Final = 1
"""Version of every wire model in this package; bumped on any incompatible change."""


class Action(StrEnum):
    """What a tool call does to its target."""

    READ = "read"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    EXECUTE = "execute"


class DecisionKind(StrEnum):
    """The three decisions, from least to most restrictive."""

    ALLOW = "ALLOW"
    REQUIRE_APPROVAL = "REQUIRE_APPROVAL"
    BLOCK = "BLOCK"

    @property
    def severity(self) -> int:
        """Rank used by the combining rule: BLOCK > REQUIRE_APPROVAL > ALLOW."""
        return _SEVERITY[self]


_SEVERITY = {DecisionKind.ALLOW: 0, DecisionKind.REQUIRE_APPROVAL: 1, DecisionKind.BLOCK: 2}


def most_restrictive(*decisions: DecisionKind) -> DecisionKind:
    """The one combining rule: the most restrictive decision wins."""
    return max(decisions, key=_SEVERITY.__getitem__)


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware timestamp, normalised to UTC; naive timestamps are rejected."""


def _require_finite(value: Any, path: str = "params") -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path} is {value}: numbers must be finite")
    if isinstance(value, dict):
        for key, item in value.items():
            _require_finite(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _require_finite(item, f"{path}[{index}]")
    return value


def require_finite_json(value: Any) -> Any:
    """Reject NaN and infinities anywhere inside a JSON value."""
    return _require_finite(value)


class WireModel(BaseModel):
    """Base of every message on the wire: unknown fields are an error, instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)
