"""Errors of the engine: one root, each error carrying its context."""

from __future__ import annotations

from dataclasses import dataclass


class EngineError(Exception):
    """Root of every error the engine raises (evaluation itself never raises)."""


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    """One problem in a policy file: where it is and what is wrong."""

    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


class PolicyError(EngineError):
    """A policy failed to load or validate; it is rejected whole. ``issues`` lists every problem."""

    def __init__(self, issues: list[PolicyIssue]) -> None:
        self.issues = sorted(issues, key=lambda issue: (issue.source, issue.line, issue.message))
        super().__init__("\n".join(str(issue) for issue in self.issues))


class ConditionError(EngineError):
    """A condition could not be evaluated for an intent (missing field, wrong type)."""
