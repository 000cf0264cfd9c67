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


MAX_JSON_DEPTH: Final = 32
"""How deep a JSON document inside an intent (``params``) may nest: containers within containers, the
document itself being the first. Deeper ones are refused (``invalid_intent``) before anything walks them;
no tool call needs more, and the bound keeps every later walk (risk, digests, audit) shallow."""


def check_json_value(value: Any, path: str = "params", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``value`` unchanged if it nests at most ``max_depth`` containers deep and holds only finite
    numbers; else ValueError naming where. Iterative: no input can exhaust the stack."""
    stack: list[tuple[Any, str, int]] = [(value, path, 1)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{where} is {item}: numbers must be finite")
        if isinstance(item, dict):
            children: Any = ((f"{where}.{key}", child) for key, child in item.items())
        elif isinstance(item, list | tuple):
            children = ((f"{where}[{index}]", child) for index, child in enumerate(item))
        else:
            continue
        if depth > max_depth:
            raise ValueError(f"{path} nests deeper than {max_depth} levels (at {where[:200]}); the limit "
                             f"is {max_depth}")
        stack.extend((child, name, depth + 1) for name, child in children)
    return value


class WireModel(BaseModel):
    """Base of every message on the wire: unknown fields are an error, instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)
