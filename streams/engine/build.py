"""Fast construction of trusted wire models on the hot path.

The engine builds a Decision (and its Risk and factors) for every intent from values it produced
itself. pydantic's ``model_construct`` costs ~10 us per model; this sets the same instance
attributes directly (what ``model_construct`` does, minus its per-field default resolution), through
the slot descriptors of :class:`pydantic.BaseModel` (cheaper than ``object.__setattr__``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

from pydantic import BaseModel

from schemas.common import SCHEMA_VERSION, DecisionKind
from schemas.decision import Decision, Risk, RiskFactor

M = TypeVar("M", bound=BaseModel)


class Applied(NamedTuple):
    """Something that applied to an intent: a rule, a limit or a risk threshold, with its reason."""

    order: int
    id: str
    decision: DecisionKind
    reason: str


_new = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def trusted(cls: type[M], fields: set[str], values: dict[str, Any]) -> M:
    """An instance of ``cls`` from complete, already-valid field values (``fields``: all of them).

    Instances of a class share one fields-set: pydantic copies it before any update.
    """
    instance: M = _new(cls)
    _set_dict(instance, values)
    _set_fields(instance, fields)
    _set_extra(instance, None)
    _set_private(instance, None)
    return instance


NO_RISK = Risk()
_FACTOR_FIELDS = set(RiskFactor.model_fields)
_RISK_FIELDS = set(Risk.model_fields)
_DECISION_FIELDS = set(Decision.model_fields)


def risk_factor(name: str, contribution: float, detail: str) -> RiskFactor:
    """A factor; ``contribution`` is capped to [0, 1]."""
    capped = 1.0 if contribution > 1.0 else (0.0 if contribution < 0.0 else contribution)
    return trusted(RiskFactor, _FACTOR_FIELDS, {"name": name, "contribution": capped, "detail": detail})


def risk(score: float, factors: tuple[RiskFactor, ...]) -> Risk:
    """A risk score in [0, 1] with its factors."""
    instance: Risk = _new(Risk)  # trusted(), inlined: once per intent
    _set_dict(instance, {"score": score, "factors": factors})
    _set_fields(instance, _RISK_FIELDS)
    _set_extra(instance, None)
    _set_private(instance, None)
    return instance


def decision(
    request_id: UUID, agent_id: str, kind: DecisionKind, reasons: tuple[str, ...], rules: tuple[str, ...],
    determining: tuple[str, ...], risk_: Risk, policy_version: str, decided_at: datetime,
    policy_name: str = "",
) -> Decision:
    """A final Decision (no approval fields yet)."""
    instance: Decision = _new(Decision)  # trusted(), inlined: once per intent
    _set_dict(instance, {
        "schema_version": SCHEMA_VERSION, "request_id": request_id, "agent_id": agent_id, "decision": kind,
        "reasons": reasons, "rules": rules, "determining": determining, "risk": risk_,
        "policy_version": policy_version,
        "policy_name": policy_name, "decided_at": decided_at, "final": True, "approval_deadline_at": None,
        "approved_by": (), "intent_digest": "",
    })
    _set_fields(instance, _DECISION_FIELDS)
    _set_extra(instance, None)
    _set_private(instance, None)
    return instance
