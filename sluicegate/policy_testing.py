"""Table-driven policy tests: YAML case files of intents and expected decisions, run through the engine.

A case file names a policy, defaults merged under every intent, and cases. A case is one intent or an
ordered list of steps (a step may repeat its intent at a fixed event-time interval); state is carried
across the steps of a case and every case starts with empty state. The format is described in
``policies/README.md``. The same runner serves ``sluicegate policy test`` and the pytest suite.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table

from schemas.common import DecisionKind
from schemas.decision import Decision
from schemas.intent import Intent
from schemas.policy import Duration, duration_ms
from streams.engine import CompiledPolicy, InMemoryState, PolicyError, decide, load_policy
from streams.engine.loader import Lines, line_of, parse_yaml

__all__ = [
    "Case",
    "CaseFile",
    "CaseFileError",
    "CaseResult",
    "Expectation",
    "Failure",
    "Step",
    "default_cases_path",
    "load_case_file",
    "print_report",
    "run_case",
    "run_case_file",
]

_REQUEST_ID_NAMESPACE = uuid.UUID("6f2b7a1c-5d0e-4c8a-9e1f-3b7d2a4c6e80")
"""Namespace of the generated request ids (uuid5 of file, case, step and copy)."""
MAX_REPEAT = 100_000


class CaseFileError(Exception):
    """A case file that cannot be read: where it is and what is wrong."""

    def __init__(self, path: Path | str, line: int, message: str) -> None:
        self.path, self.line, self.message = str(path), line, message
        super().__init__(f"{self.path}:{line}: {message}")


# --- reading YAML with lines ------------------------------------------------------------------------


def _read_yaml(path: Path) -> tuple[Any, Lines]:
    """The data of a case file and the line of every key and item (the policy loader's reader)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise CaseFileError(path, 1, f"cannot read the case file: {detail}") from None
    try:
        return parse_yaml(text, str(path))
    except PolicyError as exc:
        first = exc.issues[0]
        raise CaseFileError(path, first.line, first.message) from None


# --- the document ------------------------------------------------------------------------------------


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ExpectDoc(_Doc):
    expect: DecisionKind
    rules: list[str] | None = None
    determining: list[str] | None = None
    factors: list[str] = Field(default_factory=list)
    factors_absent: list[str] = Field(default_factory=list)
    reasons_contain: str | None = None


class _StepDoc(_ExpectDoc):
    intent: dict[str, Any]
    repeat: int = Field(default=1, ge=1, le=MAX_REPEAT)
    every: Duration = "1s"


class _CaseDoc(_Doc):
    name: str = Field(min_length=1)
    steps: list[_StepDoc] | None = Field(default=None, min_length=1)
    intent: dict[str, Any] | None = None
    repeat: int = Field(default=1, ge=1, le=MAX_REPEAT)
    every: Duration = "1s"
    expect: DecisionKind | None = None
    rules: list[str] | None = None
    determining: list[str] | None = None
    factors: list[str] = Field(default_factory=list)
    factors_absent: list[str] = Field(default_factory=list)
    reasons_contain: str | None = None

    @model_validator(mode="after")
    def _intent_or_steps(self) -> _CaseDoc:
        if (self.steps is None) == (self.intent is None):
            raise ValueError("a case has either intent (with expect) or steps, not both and not neither")
        if self.intent is not None and self.expect is None:
            raise ValueError("a case with an intent needs expect: ALLOW, REQUIRE_APPROVAL or BLOCK")
        if self.steps is not None and self.model_fields_set & {
            "expect", "rules", "determining", "factors", "factors_absent", "reasons_contain", "repeat",
            "every",
        }:
            raise ValueError("a case with steps puts expect, rules, ... repeat and every on each step")
        return self

    def as_steps(self) -> list[_StepDoc]:
        """The case as steps: a single-intent case is one step."""
        if self.steps is not None:
            return self.steps
        fields = self.model_dump(exclude={"name", "steps"}, exclude_unset=True)
        return [_StepDoc.model_validate(fields)]


class _FileDoc(_Doc):
    policy: str = Field(min_length=1)
    defaults: dict[str, Any] = Field(default_factory=dict)
    cases: list[_CaseDoc] = Field(min_length=1)


def _validate_file(data: Any, lines: Lines, path: Path) -> _FileDoc:
    """Check the structure of a case file; the first problem is raised with its line."""
    try:
        return _FileDoc.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        loc = tuple(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown field {loc[-1]!r}"
        elif error["type"] == "missing":
            message = f"missing field {loc[-1]!r}"
        elif error["type"] == "string_pattern_mismatch":
            message = f"{loc[-1]}: bad duration {error['input']!r} (use e.g. 500ms, 30s, 10m, 1h, 1d)"
        elif loc:
            message = f"{'.'.join(str(part) for part in loc)}: {message}"
        raise CaseFileError(path, line_of(loc, lines), message) from None


# --- the loaded form ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """What a decision must be: the decision, and optionally rule ids, what determined it, factors and
    a reason."""

    decision: DecisionKind
    rules: tuple[str, ...] | None = None
    determining: tuple[str, ...] | None = None
    factors: tuple[str, ...] = ()
    factors_absent: tuple[str, ...] = ()
    reasons_contain: str | None = None

    def problems(self, actual: Decision) -> list[str]:
        """Every way ``actual`` differs from this expectation (empty when it meets it)."""
        found: list[str] = []
        if actual.decision is not self.decision:
            found.append(f"decision is {actual.decision.value}, expected {self.decision.value}")
        if self.rules is not None and sorted(actual.rules) != sorted(self.rules):
            found.append(f"rules are {list(actual.rules)}, expected {list(self.rules)}")
        if self.determining is not None and actual.determining != self.determining:
            found.append(f"determining is {list(actual.determining)}, expected {list(self.determining)}")
        names = {factor.name for factor in actual.risk.factors}
        missing = [name for name in self.factors if name not in names]
        if missing:
            found.append(f"risk factors {missing} missing (present: {sorted(names)})")
        unwanted = [name for name in self.factors_absent if name in names]
        if unwanted:
            found.append(f"risk factors {unwanted} present, expected absent")
        if self.reasons_contain is not None and not any(self.reasons_contain in r for r in actual.reasons):
            found.append(f"no reason contains {self.reasons_contain!r}")
        return found

    def describe(self) -> str:
        """One line: the decision and any extra expectations."""
        parts = [self.decision.value]
        if self.rules is not None:
            parts.append(f"rules={list(self.rules)}")
        if self.determining is not None:
            parts.append(f"determining={list(self.determining)}")
        if self.factors:
            parts.append(f"factors={list(self.factors)}")
        if self.factors_absent:
            parts.append(f"factors_absent={list(self.factors_absent)}")
        if self.reasons_contain is not None:
            parts.append(f"reasons_contain={self.reasons_contain!r}")
        return " ".join(parts)


@dataclass(frozen=True)
class Step:
    """Intents sent in order (one, or ``repeat`` copies), each of which must meet ``expect``."""

    intents: tuple[Intent, ...]
    expect: Expectation
    line: int


@dataclass(frozen=True)
class Case:
    """A named, ordered list of steps, run against fresh state."""

    name: str
    steps: tuple[Step, ...]
    line: int


@dataclass(frozen=True)
class CaseFile:
    """A loaded case file: the policy it tests and its cases."""

    path: Path
    policy_path: Path
    cases: tuple[Case, ...]


def _request_id(path: Path, case: str, step: int, copy: int) -> str:
    return str(uuid.uuid5(_REQUEST_ID_NAMESPACE, f"{path.name}\x00{case}\x00{step}\x00{copy}"))


def _expand_step(
    step: _StepDoc, defaults: dict[str, Any], after: datetime | None, ident: tuple[Path, str, int], line: int,
) -> tuple[Intent, ...]:
    """The intents of one step, with event times and request ids filled in."""
    path, case, index = ident
    every = timedelta(milliseconds=duration_ms(step.every))
    fields = {**defaults, **step.intent}
    if "occurred_at" not in step.intent and after is not None:
        fields["occurred_at"] = after + every
    if "occurred_at" not in fields:
        raise CaseFileError(path, line, "the intent has no occurred_at (give one here or in defaults)")
    if "request_id" in step.intent and step.repeat > 1:
        raise CaseFileError(path, line, "an explicit request_id cannot be repeated; drop it or repeat")
    fields.setdefault("request_id", _request_id(path, case, index, 0))
    try:
        first = Intent.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"]) or "intent"
        raise CaseFileError(path, line, f"invalid intent: {where}: {error['msg']}") from None
    copies = [first]
    for copy in range(1, step.repeat):
        copies.append(first.model_copy(update={
            "occurred_at": first.occurred_at + copy * every,
            "request_id": uuid.UUID(_request_id(path, case, index, copy)),
        }))
    return tuple(copies)


def load_case_file(path: Path | str) -> CaseFile:
    """Read and check a case file; every intent is built and validated now. Raises CaseFileError."""
    path = Path(path)
    data, lines = _read_yaml(path)
    if not isinstance(data, dict):
        raise CaseFileError(path, 1, "a case file is a YAML mapping with policy:, defaults: and cases:")
    doc = _validate_file(data, lines, path)
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for index, case_doc in enumerate(doc.cases):
        case_line = line_of(("cases", index), lines)
        if case_doc.name in seen:
            first = seen[case_doc.name]
            raise CaseFileError(path, case_line, f"duplicate case name {case_doc.name!r} (line {first})")
        seen[case_doc.name] = case_line
        steps: list[Step] = []
        after: datetime | None = None
        for number, step_doc in enumerate(case_doc.as_steps()):
            loc: tuple[str | int, ...] = ("cases", index, "steps", number, "intent") if case_doc.steps \
                else ("cases", index, "intent")
            line = line_of(loc, lines)
            intents = _expand_step(step_doc, doc.defaults, after, (path, case_doc.name, number), line)
            after = intents[-1].occurred_at
            expect = Expectation(
                decision=step_doc.expect,
                rules=None if step_doc.rules is None else tuple(step_doc.rules),
                determining=None if step_doc.determining is None else tuple(step_doc.determining),
                factors=tuple(step_doc.factors),
                factors_absent=tuple(step_doc.factors_absent),
                reasons_contain=step_doc.reasons_contain,
            )
            steps.append(Step(intents=intents, expect=expect, line=line))
        cases.append(Case(name=case_doc.name, steps=tuple(steps), line=case_line))
    return CaseFile(path=path, policy_path=(path.parent / doc.policy), cases=tuple(cases))


def default_cases_path(policy_path: Path | str) -> Path:
    """Where the cases of a policy live by convention: ``<policy dir>/cases/<policy stem>.yaml``."""
    policy_path = Path(policy_path)
    return policy_path.parent / "cases" / f"{policy_path.stem}.yaml"


# --- running -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """The first intent of a case whose decision did not meet its expectation."""

    step: int
    copy: int
    intent: Intent
    expected: Expectation
    actual: Decision
    problems: tuple[str, ...]

    def intent_json(self) -> str:
        """The intent as indented JSON."""
        return json.dumps(self.intent.model_dump(mode="json", exclude_defaults=True), indent=2)

    def describe(self) -> str:
        """A plain-text account of the failure: where, the intent, expected and actual."""
        risk = ", ".join(f"{f.name}={f.contribution:.2f}" for f in self.actual.risk.factors) or "none"
        lines = [
            f"step {self.step + 1}, intent {self.copy + 1}: " + "; ".join(self.problems),
            f"intent: {self.intent_json()}",
            f"expected: {self.expected.describe()}",
            f"actual: {self.actual.decision.value} rules={list(self.actual.rules)} "
            f"determining={list(self.actual.determining)} risk={self.actual.risk.score:.2f} ({risk})",
            "reasons:",
            *(f"  - {reason}" for reason in self.actual.reasons),
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one case: how many intents were decided and the failure, if any."""

    case: Case
    decided: int
    failure: Failure | None

    @property
    def passed(self) -> bool:
        """True when every intent met its expectation."""
        return self.failure is None


def run_case(policy: CompiledPolicy, case: Case) -> CaseResult:
    """Run one case against fresh state; stop at the first intent that misses its expectation."""
    state = InMemoryState()
    decided = 0
    for step_index, step in enumerate(case.steps):
        for copy, intent in enumerate(step.intents):
            actual = decide(policy, state, intent)
            decided += 1
            problems = step.expect.problems(actual)
            if problems:
                failure = Failure(step_index, copy, intent, step.expect, actual, tuple(problems))
                return CaseResult(case, decided, failure)
    return CaseResult(case, decided, None)


def run_case_file(
    case_file: CaseFile, policy: CompiledPolicy | None = None, only: Iterable[str] | None = None,
) -> list[CaseResult]:
    """Run every case (or those named in ``only``); the policy defaults to the one the file names."""
    compiled = policy if policy is not None else load_policy(case_file.policy_path)
    wanted = None if only is None else set(only)
    return [run_case(compiled, case) for case in case_file.cases if wanted is None or case.name in wanted]


# --- reporting ---------------------------------------------------------------------------------------


def print_report(
    console: Console, case_file: CaseFile, policy: CompiledPolicy, results: list[CaseResult],
) -> None:
    """A summary table of the cases, then each failure: the intent, expected, actual and reasons."""
    table = Table(title=f"{case_file.path} against {policy.name} ({policy.version})", title_justify="left")
    table.add_column("result")
    table.add_column("case")
    table.add_column("intents", justify="right")
    table.add_column("line", justify="right")
    for result in results:
        mark = "[green]PASS[/green]" if result.passed else "[bold red]FAIL[/bold red]"
        table.add_row(mark, escape(result.case.name), str(result.decided), str(result.case.line))
    console.print(table)
    for result in results:
        if result.failure is not None:
            console.print(_failure_panel(case_file, result.case, result.failure))
    failed = sum(not result.passed for result in results)
    decided = sum(result.decided for result in results)
    colour = "red" if failed else "green"
    console.print(
        f"[{colour}]{len(results) - failed} passed, {failed} failed[/{colour}] ({decided} intents decided)"
    )


def _failure_panel(case_file: CaseFile, case: Case, failure: Failure) -> Panel:
    step = case.steps[failure.step]
    actual = failure.actual
    factors = ", ".join(f"{f.name} {f.contribution:.2f}" for f in actual.risk.factors) or "none"
    body = Table.grid(padding=(0, 1))
    body.add_column(style="bold")
    body.add_column()
    where = f"{case_file.path}:{step.line} (step {failure.step + 1}, intent {failure.copy + 1})"
    body.add_row("where", where)
    body.add_row("problems", escape("\n".join(failure.problems)))
    body.add_row("intent", Syntax(failure.intent_json(), "json", theme="ansi_dark", word_wrap=True))
    body.add_row("expected", escape(failure.expected.describe()))
    body.add_row("actual", escape(f"{actual.decision.value}  rules={list(actual.rules)}  "
                                  f"determining={list(actual.determining)}"))
    body.add_row("reasons", escape("\n".join(f"- {reason.strip()}" for reason in actual.reasons) or "none"))
    body.add_row("risk", escape(f"{actual.risk.score:.2f} ({factors})"))
    return Panel(body, title=f"[bold red]FAIL[/bold red] {escape(case.name)}", title_align="left")
