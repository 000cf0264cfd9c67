"""The risk model: weighted factors, deviation from the agent's own history, thresholds.

History factors (per agent and tool, only after ``min_observations`` allowed actions):
- ``amount_deviation``: ``|value - mean| / stddev >= z`` (with a zero stddev: any other value);
- ``new_target``: a target this agent never used with this tool (until 64 targets are known);
- ``unusual_hour``: a UTC hour of day in which this agent never acted with this tool;
- ``burst``: actions in the burst window (this one included) ``>= ratio * max(1, usual)``, where
  ``usual = observations * window / max(last_seen - first_seen, window)``.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from schemas.common import Action, DecisionKind
from schemas.decision import Risk, RiskFactor
from schemas.intent import Intent
from schemas.policy import History, RiskModel, duration_ms
from streams.engine import build
from streams.engine.build import Applied
from streams.engine.conditions import MISSING, Getter, field_getter, glob_matcher, is_number, param_key
from streams.engine.keys import history_key
from streams.engine.state import MAX_TARGETS, HistoryState, StateStore

_CACHE_LIMIT = 65_536


def target_hash(target: str) -> int:
    """A stable signed 64-bit hash of a target (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(target.encode(), digest_size=8).digest(), "little", signed=True)


def as_float(value: Any) -> float | None:
    """A finite float for a JSON number, else None."""
    if value.__class__ is float:
        return value if math.isfinite(value) else None
    if not is_number(value):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


class HistoryChange(NamedTuple):
    """Teach one allowed action to the (agent, tool) history at ``key`` (always agent-scoped)."""

    key: str
    at_ms: int
    amount: float | None
    target_hash: int
    burst_window_ms: int | None
    scope: str = "agent"


_factor = build.risk_factor
_tuple = tuple.__new__


@dataclass(frozen=True, slots=True)
class CompiledRisk:
    """A risk model ready to score intents."""

    model: RiskModel
    history: History | None
    action_factors: dict[Action, RiskFactor]
    sensitivity: tuple[tuple[Callable[[str], bool], float, str], ...]
    magnitude: tuple[tuple[Getter, str | None, float, float, str, str, dict[float, RiskFactor]], ...]
    amount_of: Getter | None
    amount_key: str | None
    burst_window_ms: int | None
    thresholds: tuple[tuple[float, DecisionKind, str], ...]
    order: int
    sensitivity_memo: dict[str, RiskFactor | None]
    hash_memo: dict[str, int]

    @classmethod
    def of(cls, model: RiskModel, order: int) -> CompiledRisk:
        """Compile a risk model; a threshold that applies is named at position ``order``."""
        history = model.history
        amount = history.amount if history is not None else None
        burst = history.burst if history is not None else None
        return cls(
            model=model,
            history=history,
            action_factors={
                action: _factor("action_type", weight, action.value)
                for action, weight in model.action_weights.items() if weight > 0
            },
            sensitivity=tuple((glob_matcher(t.target), t.weight, t.target) for t in model.target_sensitivity),
            magnitude=tuple(
                (field_getter(m.field), param_key(m.field), m.scale, m.weight, f"magnitude:{m.field}",
                 f" of scale {m.scale:g}", {})
                for m in model.magnitude if m.weight > 0
            ),
            amount_of=field_getter(amount.field) if amount is not None else None,
            amount_key=param_key(amount.field) if amount is not None else None,
            burst_window_ms=duration_ms(burst.window) if burst is not None else None,
            thresholds=tuple(sorted(
                ((t.at_least, t.decision, f"risk>={t.at_least:g}") for t in model.thresholds), reverse=True,
            )),
            order=order,
            sensitivity_memo={},
            hash_memo={},
        )

    def _sensitivity(self, target: str) -> RiskFactor | None:
        """The target-sensitivity factor of the first matching glob (memoised per target)."""
        memo = self.sensitivity_memo
        found = next((
            _factor("target_sensitivity", weight, f"{target} matches {glob}")
            for test, weight, glob in self.sensitivity if test(target) and weight > 0
        ), None)
        if len(memo) >= _CACHE_LIMIT:
            memo.clear()
        memo[target] = found
        return found

    def _target_hash(self, target: str) -> int:
        memo = self.hash_memo
        found = memo.get(target)
        if found is None:
            if len(memo) >= _CACHE_LIMIT:
                memo.clear()
            found = memo[target] = target_hash(target)
        return found

    def assess(
        self, intent: Intent, state: StateStore, at_ms: int,
    ) -> tuple[Risk, Applied | None, HistoryChange | None]:
        """The risk (score capped at 1, its non-zero factors), the threshold that applied if any,
        and the history lesson to apply on ALLOW."""
        factors: list[RiskFactor] = []
        action = self.action_factors.get(intent.action)
        if action is not None:
            factors.append(action)
        if self.sensitivity:
            sensitive = self.sensitivity_memo.get(intent.target, MISSING)
            if sensitive is MISSING:
                sensitive = self._sensitivity(intent.target)
            if sensitive is not None:
                factors.append(sensitive)
        params = intent.params
        for get, key, scale, weight, name, suffix, memo in self.magnitude:
            raw = params.get(key, MISSING) if key is not None else get(intent)
            value = raw if raw.__class__ is float and raw - raw == 0.0 else as_float(raw)  # finite float
            if value is not None and value > 0:
                factor = memo.get(value)  # the factor is a function of the value: share it
                if factor is None:
                    if len(memo) >= _CACHE_LIMIT:
                        memo.clear()
                    factor = memo[value] = _factor(
                        name, weight * min(1.0, value / scale), format(value, "g") + suffix)
                factors.append(factor)
        change = None
        history = self.history
        if history is not None:
            key = history_key(intent.agent_id, intent.tool)
            amount_key = self.amount_key
            raw = params.get(amount_key, MISSING) if amount_key is not None else (
                self.amount_of(intent) if self.amount_of is not None else None)
            amount = raw if raw.__class__ is float and raw - raw == 0.0 else as_float(raw)
            t_hash = self.hash_memo.get(intent.target)
            if t_hash is None:
                t_hash = self._target_hash(intent.target)
            past = state.get_history(key)
            if past is not None and past.observations >= history.min_observations:
                self._deviation(intent, past, at_ms, amount, t_hash, factors)
            change = _tuple(HistoryChange, (key, at_ms, amount, t_hash, self.burst_window_ms, "agent"))
        count = len(factors)
        if count == 0:  # a score of 0 reaches no threshold (they are all > 0)
            return build.NO_RISK, None, change
        if count == 1:
            score = round(factors[0].contribution, 9)
        elif count == 2:  # one IEEE addition is exactly rounded, as fsum is
            total = factors[0].contribution + factors[1].contribution
            score = round(total if total < 1.0 else 1.0, 9)
        else:
            score = round(min(1.0, math.fsum([factor.contribution for factor in factors])), 9)
        return build.risk(score, tuple(factors)), self._threshold(score, factors), change

    def _threshold(self, score: float, factors: list[RiskFactor]) -> Applied | None:
        for at_least, decision, name in self.thresholds:
            if score >= at_least:
                names = ", ".join([factor.name for factor in factors])
                return Applied(self.order, name, decision, f"risk {score:.2f} >= {at_least:g} ({names})")
        return None

    def _deviation(
        self, intent: Intent, past: HistoryState, at_ms: int, amount: float | None, t_hash: int,
        factors: list[RiskFactor],
    ) -> None:
        history = self.history
        assert history is not None
        spec = history.amount
        if spec is not None and amount is not None and past.amount_n >= history.min_observations:
            mean, std = past.amount_mean, past.amount_std
            z = abs(amount - mean) / std if std > 0 else (math.inf if amount != mean else 0.0)
            if z >= spec.z:
                factors.append(_factor("amount_deviation", spec.weight,
                                       f"{amount:g} is {z:.1f} sd from mean {mean:.2f} (sd {std:.2f})"))
        new_target = history.new_target
        if new_target is not None and len(past.targets) < MAX_TARGETS and not past.knows_target(t_hash):
            factors.append(_factor("new_target", new_target.weight,
                                   f"{intent.target} never used with {intent.tool}"))
        hour = (at_ms // 3_600_000) % 24
        if history.unusual_hour is not None and past.hours[hour] == 0:
            detail = f"no activity at {hour:02d}h UTC"
            factors.append(_factor("unusual_hour", history.unusual_hour.weight, detail))
        burst = history.burst
        if burst is not None and self.burst_window_ms is not None:
            window = self.burst_window_ms
            recent = past.recent_ms
            count = 1 + bisect_right(recent, at_ms) - bisect_right(recent, at_ms - window)
            usual = past.observations * window / max(past.last_ms - past.first_ms, window)
            if count >= burst.ratio * max(1.0, usual):
                factors.append(_factor("burst", burst.weight,
                                       f"{count} in {burst.window}, usually {usual:.2f}"))

