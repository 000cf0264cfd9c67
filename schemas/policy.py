"""The policy document (docs/policy-language.md) as pydantic models: the YAML a policy file holds.

Validation here is structural and local (unknown fields, bad ops, bad regexes, unknown time zones,
limits without a window). Cross-references (unique ids, schedule names, approval only on
REQUIRE_APPROVAL rules, limits and risk thresholds) are checked by :func:`check_document`, which
returns located issues.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import re2  # type: ignore[import-untyped]
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.common import Action, DecisionKind
from schemas.decision import MARKERS

MAX_LIMIT_WINDOW = "31d"
"""The longest window of a limit: a month's budget. Window state is kept for up to twice the window."""
MAX_LIMIT_COUNT = 10_000
"""The largest ``count`` of a limit: a window keeps up to twice that many timestamps per key."""
MAX_BURST_WINDOW = "1d"
"""The longest window of the risk model's burst factor."""
MAX_REGEX_LENGTH = 1_000
"""The longest pattern of a ``regex`` condition (RE2 compiles it to a bounded automaton)."""

_DURATION_RE = re.compile(r"^([0-9]+)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Loc = tuple[str | int, ...]
"""A location inside the document, as pydantic reports it (keys and list indexes)."""


def duration_ms(text: str) -> int:
    """Milliseconds in a duration such as ``500ms``, ``30s``, ``10m``, ``1h``, ``1d``."""
    found = _DURATION_RE.match(text)
    if found is None:
        raise ValueError(f"bad duration {text!r}: use a whole number and ms, s, m, h or d (e.g. 10m)")
    return int(found.group(1)) * _UNIT_MS[found.group(2)]


def _check_duration(text: str) -> str:
    if duration_ms(text) <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return text


def _at_most(bound: str) -> AfterValidator:
    def check(text: str) -> str:
        if duration_ms(text) > duration_ms(bound):
            raise ValueError(f"window {text!r} is longer than the largest allowed, {bound}")
        return text

    return AfterValidator(check)


def compile_regex(pattern: str) -> Any:
    """A ``regex`` condition's pattern compiled with RE2: linear time in the input, so no pattern can
    backtrack catastrophically. RE2's syntax is Python's without backreferences and look-around.
    Raises ValueError for a pattern RE2 refuses or one longer than :data:`MAX_REGEX_LENGTH`."""
    if len(pattern) > MAX_REGEX_LENGTH:
        raise ValueError(f"regex of {len(pattern)} characters: at most {MAX_REGEX_LENGTH}")
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"bad regex {pattern!r}: {detail}") from None


class PolicyModel(BaseModel):
    """Base of every policy node: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Duration = Annotated[
    str,
    Field(pattern=_DURATION_RE.pattern, examples=["500ms", "30s", "10m", "1h", "1d"]),
    AfterValidator(_check_duration),
]
Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=128)]
FieldPath = Annotated[
    str,
    Field(
        pattern=r"^(params(\.[^.\s]+)+|labels\.[^.\s]+|tool|action|target|environment|agent_role|agent_id)$",
        description="params.<path>, labels.<name>, tool, action, target, environment, agent_role or agent_id",
    ),
]
Weight = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Scalar = str | int | float | bool | None
StrOrList = str | list[str]

Op = Literal["eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "glob", "regex", "exists"]
NUMERIC_OPS = frozenset({"lt", "lte", "gt", "gte"})


class Comparison(PolicyModel):
    """``{field, op, value}``: one test of one field of the intent."""

    field: FieldPath
    op: Op
    value: Any = None
    default: Scalar = Field(default=None, description="Used when the field is absent (not for exists).")

    @field_validator("value")
    @classmethod
    def _value_fits_op(cls, value: Any, info: ValidationInfo) -> Any:
        op = info.data.get("op")
        if op is None:
            return value
        if op in NUMERIC_OPS and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"op {op} needs a number, got {value!r}")
        if op in ("eq", "ne") and not isinstance(value, str | int | float | bool | None):
            raise ValueError(f"op {op} needs a scalar (string, number, boolean or null), got {value!r}")
        if op in ("in", "not_in") and not (
            isinstance(value, list) and all(isinstance(v, str | int | float | bool | None) for v in value)
        ):
            raise ValueError(f"op {op} needs a list of scalars, got {value!r}")
        if op in ("glob", "regex") and not isinstance(value, str):
            raise ValueError(f"op {op} needs a string, got {value!r}")
        if op == "regex":
            compile_regex(value)
        if op == "exists" and not isinstance(value, bool):
            raise ValueError(f"op exists needs true or false, got {value!r}")
        return value


class AllCondition(PolicyModel):
    """True when every sub-condition is true."""

    all: list[Condition] = Field(min_length=1)


class AnyCondition(PolicyModel):
    """True when at least one sub-condition is true."""

    any: list[Condition] = Field(min_length=1)


class NotCondition(PolicyModel):
    """True when the sub-condition is false."""

    not_: Condition = Field(alias="not")


class ScheduleCondition(PolicyModel):
    """True when the intent's ``occurred_at`` falls inside the named schedule."""

    schedule: str


def _condition_tag(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("all", "any", "not", "schedule"):
            if key in value:
                return key
        return "compare"
    tags: dict[type, str] = {
        AllCondition: "all", AnyCondition: "any", NotCondition: "not", ScheduleCondition: "schedule",
    }
    return tags.get(type(value), "compare")


Condition = Annotated[
    Annotated[Comparison, Tag("compare")]
    | Annotated[AllCondition, Tag("all")]
    | Annotated[AnyCondition, Tag("any")]
    | Annotated[NotCondition, Tag("not")]
    | Annotated[ScheduleCondition, Tag("schedule")],
    Discriminator(_condition_tag),
]


class Match(PolicyModel):
    """What an intent must look like for a rule or limit to be considered; absent keys match all."""

    tool: StrOrList | None = Field(default=None, description="glob or list of globs")
    action: Action | list[Action] | None = None
    target: StrOrList | None = Field(default=None, description="glob or list of globs")
    environment: StrOrList | None = None
    agent_role: StrOrList | None = None
    agent_id: StrOrList | None = None


class Schedule(PolicyModel):
    """A weekly time window in a named time zone: ``start`` inclusive, ``end`` exclusive."""

    timezone: str = "UTC"
    days: list[Day] = Field(
        default_factory=lambda: list(DAYS), min_length=1
    )
    start: str = Field(default="00:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    end: str = Field(default="24:00", pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Paris)") from None
        return value

    @model_validator(mode="after")
    def _start_before_end(self) -> Schedule:
        if minutes_of(self.start) >= minutes_of(self.end):
            raise ValueError(f"schedule start {self.start} must be before end {self.end}")
        return self


def minutes_of(hhmm: str) -> int:
    """Minutes since midnight of ``HH:MM``."""
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


class Approval(PolicyModel):
    """Who approves a REQUIRE_APPROVAL decision, how many, and by when."""

    group: str = Field(default="reviewers", min_length=1)
    quorum: int = Field(default=1, ge=1)
    timeout: Duration = "15m"
    channel: str | None = None


class Rule(PolicyModel):
    """A decision for the intents that match and satisfy ``when``."""

    id: Identifier
    description: str = ""
    match: Match = Field(default_factory=Match)
    when: Condition | None = None
    decision: DecisionKind
    approval: Approval | None = None


LimitKey = Literal["agent", "tool", "target", "role", "fleet"]


class Limit(PolicyModel):
    """A sliding event-time window: at most ``count`` actions, or a ``sum`` of a field up to ``max``."""

    id: Identifier
    description: str = ""
    match: Match = Field(default_factory=Match)
    when: Condition | None = None
    key: LimitKey | list[LimitKey] = "agent"
    window: Annotated[Duration, _at_most(MAX_LIMIT_WINDOW)]
    count: int | None = Field(default=None, ge=1, le=MAX_LIMIT_COUNT)
    sum: FieldPath | None = None
    max: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    decision: DecisionKind = DecisionKind.BLOCK
    approval: Approval | None = Field(default=None, description="Only with decision REQUIRE_APPROVAL.")

    @model_validator(mode="after")
    def _count_or_sum(self) -> Limit:
        if (self.count is None) == (self.sum is None):
            raise ValueError(f"limit {self.id}: give exactly one of count, or sum with max")
        if (self.sum is None) != (self.max is None):
            raise ValueError(f"limit {self.id}: sum and max go together")
        return self

    @property
    def keys(self) -> tuple[LimitKey, ...]:
        """The key as a tuple (a composite key keeps its order; duplicates removed)."""
        raw = [self.key] if isinstance(self.key, str) else self.key
        return tuple(dict.fromkeys(raw))


SequenceKey = Literal["agent", "session", "target"]


class EarlierAction(PolicyModel):
    """The earlier action of a sequence rule: what it looked like and which of its final decisions count."""

    match: Match = Field(default_factory=Match)
    when: Condition | None = None
    decision: DecisionKind | list[DecisionKind] = Field(
        default=DecisionKind.ALLOW, description="The final decisions that count: ALLOW, BLOCK or both.",
    )

    @field_validator("decision")
    @classmethod
    def _final_only(cls, value: DecisionKind | list[DecisionKind]) -> DecisionKind | list[DecisionKind]:
        kinds = [value] if isinstance(value, DecisionKind) else value
        if not kinds:
            raise ValueError("name at least one decision: ALLOW, BLOCK or both")
        if DecisionKind.REQUIRE_APPROVAL in kinds:
            raise ValueError("REQUIRE_APPROVAL is not a final decision: an approved action counts as "
                             "ALLOW, a denied or expired one as BLOCK")
        return value

    @property
    def counts(self) -> frozenset[DecisionKind]:
        """The final decisions of an earlier action that make it count."""
        return frozenset([self.decision] if isinstance(self.decision, DecisionKind) else self.decision)


class Sequence(PolicyModel):
    """A rule over an agent's earlier actions: after an ``after`` action (with a counted decision) by the
    same key, the actions matching ``match``/``when`` within ``within`` get ``decision``."""

    id: Identifier
    description: str = ""
    after: EarlierAction
    match: Match = Field(default_factory=Match)
    when: Condition | None = None
    within: Annotated[Duration, _at_most(MAX_LIMIT_WINDOW)]
    key: SequenceKey | list[SequenceKey] = Field(
        default="agent", description="Always the agent; session adds session_id, target the target",
    )
    decision: DecisionKind = DecisionKind.BLOCK
    approval: Approval | None = Field(default=None, description="Only with decision REQUIRE_APPROVAL.")

    @property
    def keys(self) -> tuple[SequenceKey, ...]:
        """The key as a tuple, always starting with ``agent`` (duplicates removed)."""
        raw = [self.key] if isinstance(self.key, str) else self.key
        return tuple(dict.fromkeys(["agent", *raw]))


class TargetWeight(PolicyModel):
    """Sensitivity of the targets matching a glob."""

    target: str
    weight: Weight


class Magnitude(PolicyModel):
    """``weight * min(1, value / scale)`` for a numeric field."""

    field: FieldPath
    scale: float = Field(gt=0, allow_inf_nan=False)
    weight: Weight


class AmountDeviation(PolicyModel):
    """A value at least ``z`` standard deviations from this agent's running mean for the tool."""

    field: FieldPath = "params.amount"
    z: float = Field(default=3.0, gt=0, allow_inf_nan=False)
    weight: Weight


class WeightOnly(PolicyModel):
    """A history factor with only a weight."""

    weight: Weight


class Burst(PolicyModel):
    """Count in ``window`` at least ``ratio`` times the usual count for such a window (at least 1)."""

    window: Annotated[Duration, _at_most(MAX_BURST_WINDOW)] = "1m"
    ratio: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    weight: Weight


class History(PolicyModel):
    """Deviation from this agent's own history for the tool (per agent and tool)."""

    min_observations: int = Field(default=20, ge=1)
    amount: AmountDeviation | None = None
    new_target: WeightOnly | None = None
    unusual_hour: WeightOnly | None = None
    burst: Burst | None = None


class Threshold(PolicyModel):
    """A score at or above ``at_least`` gets ``decision``."""

    at_least: float = Field(gt=0, le=1, allow_inf_nan=False)
    decision: DecisionKind
    approval: Approval | None = Field(default=None, description="Only with decision REQUIRE_APPROVAL.")


class RiskModel(PolicyModel):
    """Weights of the risk factors and the thresholds that turn a score into a decision."""

    action_weights: dict[Action, Weight] = Field(default_factory=dict)
    target_sensitivity: list[TargetWeight] = Field(default_factory=list)
    magnitude: list[Magnitude] = Field(default_factory=list)
    history: History | None = None
    thresholds: list[Threshold] = Field(default_factory=list)


REDACTED = re.compile(r"^redacted:[A-Za-z0-9_-]+:[0-9a-f]{32}(:\*{4}.{1,8})?$", re.DOTALL)
"""A sensitive parameter's value as the audit stores it and reviewers see it (``streams.redaction``)."""


def has_redacted(value: Any) -> bool:
    """Whether ``value`` (params, or any JSON value in them) holds a redacted value."""
    if isinstance(value, str):
        return REDACTED.match(value) is not None
    if isinstance(value, dict):
        return any(has_redacted(v) for v in value.values())
    if isinstance(value, list):
        return any(has_redacted(v) for v in value)
    return False


class Sensitive(PolicyModel):
    """A parameter the audit and reviewers see only as a salted hash: evaluated as usual, redacted where
    it is stored or shown (``docs/audit.md``)."""

    field: Annotated[str, Field(pattern=r"^params(\.[^.\s]+)+$", description="params.<path>")]
    show_last: int = Field(default=0, ge=0, le=8,
                           description="Characters kept at the end as a masked hint (4: ****1234).")


class PolicyDocument(PolicyModel):
    """One policy file."""

    policy: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    description: str = ""
    default: DecisionKind = DecisionKind.BLOCK
    schedules: dict[Identifier, Schedule] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    limits: list[Limit] = Field(default_factory=list)
    sequences: list[Sequence] = Field(default_factory=list)
    risk: RiskModel | None = None
    sensitive: list[Sensitive] = Field(default_factory=list)


for _model in (
    AllCondition, AnyCondition, NotCondition, Rule, Limit, EarlierAction, Sequence, PolicyDocument,
):
    _model.model_rebuild()


def _conditions(cond: Any, loc: Loc) -> Iterator[tuple[Any, Loc]]:
    yield cond, loc
    if isinstance(cond, AllCondition):
        for index, sub in enumerate(cond.all):
            yield from _conditions(sub, (*loc, "all", index))
    elif isinstance(cond, AnyCondition):
        for index, sub in enumerate(cond.any):
            yield from _conditions(sub, (*loc, "any", index))
    elif isinstance(cond, NotCondition):
        yield from _conditions(cond.not_, (*loc, "not"))


def check_document(doc: PolicyDocument) -> list[tuple[Loc, str]]:
    """Cross-reference checks pydantic cannot do locally: ids (unique, none of the markers decisions
    use in ``determining``; rules, limits and sequences share them), schedule names, approval placement
    (on rules, limits, sequences and risk thresholds)."""
    issues: list[tuple[Loc, str]] = []
    seen: dict[str, str] = {}
    entries: list[tuple[str, int, Rule | Limit | Sequence]] = [
        ("rules", i, r) for i, r in enumerate(doc.rules)
    ]
    entries += [("limits", i, lim) for i, lim in enumerate(doc.limits)]
    entries += [("sequences", i, seq) for i, seq in enumerate(doc.sequences)]
    for index, seq in enumerate(doc.sequences):
        if seq.after.when is not None:
            for cond, loc in _conditions(seq.after.when, ("sequences", index, "after", "when")):
                if isinstance(cond, ScheduleCondition) and cond.schedule not in doc.schedules:
                    issues.append(((*loc, "schedule"), f"unknown schedule {cond.schedule!r}"))
    for section, index, entry in entries:
        where = f"{section}[{index}]"
        if entry.id in MARKERS:
            message = f"id {entry.id!r} is reserved: decisions use it in determining"
            issues.append(((section, index, "id"), message))
        if entry.id in seen:
            message = f"duplicate id {entry.id!r} (first used by {seen[entry.id]})"
            issues.append(((section, index, "id"), message))
        else:
            seen[entry.id] = where
        if entry.when is not None:
            for cond, loc in _conditions(entry.when, (section, index, "when")):
                if isinstance(cond, ScheduleCondition) and cond.schedule not in doc.schedules:
                    issues.append(((*loc, "schedule"), f"unknown schedule {cond.schedule!r}"))
        if entry.approval is not None and entry.decision is not DecisionKind.REQUIRE_APPROVAL:
            kind = "rule" if isinstance(entry, Rule) else "limit" if isinstance(entry, Limit) else "sequence"
            issues.append(
                ((section, index, "approval"),
                 f"{kind} {entry.id}: approval is only allowed with decision REQUIRE_APPROVAL")
            )
    thresholds = doc.risk.thresholds if doc.risk is not None else []
    for index, threshold in enumerate(thresholds):
        if threshold.approval is not None and threshold.decision is not DecisionKind.REQUIRE_APPROVAL:
            issues.append(
                (("risk", "thresholds", index, "approval"),
                 f"risk threshold {threshold.at_least:g}: approval is only allowed with decision "
                 "REQUIRE_APPROVAL")
            )
    return issues
