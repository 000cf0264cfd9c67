"""``@gate.guard(...)``: ask before the tool runs, run it only on ALLOW, report what happened.

The decorator is shared by the async ``Gate`` and the ``SyncGate``: each binds it to its own way of
authorizing an intent (awaited, or blocking on the gate's thread) and of reporting outcomes.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast, overload

from schemas import Action, Decision, DecisionKind, Intent, OutcomeStatus
from schemas.decision import APPROVAL_EXPIRED
from sluicegate.errors import (
    ActionBlocked,
    ApprovalDenied,
    ApprovalExpired,
    GovernanceUnavailable,
    InvalidIntent,
)
from sluicegate.identity import AgentIdentity

P = ParamSpec("P")
R = TypeVar("R")

MAX_ERROR_CHARS = 4000

ParamsSpec = Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None
TargetSpec = str | Callable[..., str]


@dataclass(frozen=True, slots=True)
class Authorization:
    """The outcome of asking: the intent, the final decision, and how it was reached."""

    intent: Intent
    decision: Decision
    unavailable: bool = False
    pending: Decision | None = None
    expired: bool = False
    rejected: tuple[str, ...] = ()
    """Why replies for this request were dropped as not the worker's (missing or wrong authenticator,
    another digest, unparseable): someone answered in the worker's name."""

    @property
    def allowed(self) -> bool:
        return self.decision.decision is DecisionKind.ALLOW

    @property
    def may_fail_open(self) -> bool:
        """Whether a ``fail_open`` tool may run: governance was unavailable — an unreachable broker or a
        silent processor — and no reply that failed verification arrived (that is an attack, not an
        outage)."""
        return self.unavailable and not self.rejected


@dataclass(frozen=True, slots=True)
class GuardSpec:
    """What a guarded tool call is: ``target`` and ``params`` may be computed from the call's arguments."""

    tool: str
    action: Action
    target: TargetSpec
    params: ParamsSpec = None
    fail_open: bool = False
    agent: AgentIdentity | None = None

    def resolve(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The call's target and params; a failing params/target function is an ``InvalidIntent``."""
        try:
            target = self.target(*args, **kwargs) if callable(self.target) else self.target
            raw = self.params(*args, **kwargs) if callable(self.params) else self.params
        except Exception as exc:
            raise InvalidIntent(f"cannot compute the intent of {self.tool!r}: {exc!r}") from exc
        return target, dict(raw or {})


@dataclass(frozen=True, slots=True)
class GuardBinding:
    """How a gate builds, authorizes and reports the calls of its guarded tools."""

    make_intent: Callable[[GuardSpec, str, dict[str, Any]], Intent]
    authorize: Callable[[Intent], Awaitable[Authorization]]
    authorize_blocking: Callable[[Intent], Authorization] | None
    fail_open: Callable[[Authorization], None]
    outcome: Callable[[Authorization, OutcomeStatus, str | None, float, bool], None]


def blocked_error(auth: Authorization) -> ActionBlocked:
    """The exception for a decision that is not ALLOW, by how it was reached."""
    tool = auth.intent.tool
    if auth.unavailable:
        return GovernanceUnavailable(auth.decision, tool)
    if auth.pending is not None:
        expired = auth.expired or any(r.startswith(APPROVAL_EXPIRED) for r in auth.decision.reasons)
        return (ApprovalExpired if expired else ApprovalDenied)(auth.decision, tool)
    return ActionBlocked(auth.decision, tool)


def _admit(binding: GuardBinding, spec: GuardSpec, auth: Authorization) -> bool:
    """Whether the tool may run; True means it runs fail-open (audited). Raises when it may not run."""
    if auth.allowed:
        return False
    if spec.fail_open and auth.may_fail_open:
        binding.fail_open(auth)
        return True
    raise blocked_error(auth)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


class Guard:
    """Base of the decorators returned by ``gate.guard(...)``."""

    def __init__(self, binding: GuardBinding, spec: GuardSpec) -> None:
        self.binding = binding
        self.spec = spec

    def _intent(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Intent:
        target, params = self.spec.resolve(args, kwargs)
        return self.binding.make_intent(self.spec, target, params)

    def _wrap_async(self, fn: Callable[P, Any]) -> Callable[P, Coroutine[Any, Any, Any]]:
        binding, spec = self.binding, self.spec

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
            auth = await binding.authorize(self._intent(args, kwargs))
            fail_open = _admit(binding, spec, auth)
            started = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
            except BaseException as exc:
                binding.outcome(auth, OutcomeStatus.ERROR, _error_text(exc), _ms_since(started), fail_open)
                raise
            binding.outcome(auth, OutcomeStatus.SUCCESS, None, _ms_since(started), fail_open)
            return result

        return guarded

    def _wrap_blocking(
        self, fn: Callable[P, R], authorize: Callable[[Intent], Authorization]
    ) -> Callable[P, R]:
        binding, spec = self.binding, self.spec

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            auth = authorize(self._intent(args, kwargs))
            fail_open = _admit(binding, spec, auth)
            started = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                binding.outcome(auth, OutcomeStatus.ERROR, _error_text(exc), _ms_since(started), fail_open)
                raise
            binding.outcome(auth, OutcomeStatus.SUCCESS, None, _ms_since(started), fail_open)
            return result

        return cast(Callable[P, R], guarded)


def _ms_since(started: float) -> float:
    return max(0.0, (time.perf_counter() - started) * 1000.0)


class AsyncGuard(Guard):
    """With the async ``Gate``: the guarded function is always awaited (a sync tool runs inline)."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Coroutine[Any, Any, Any]]:
        return self._wrap_async(fn)


class BlockingGuard(Guard):
    """With the ``SyncGate``: a sync tool stays sync (it blocks on the gate's thread); async stays async."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        authorize = self.binding.authorize_blocking
        if inspect.iscoroutinefunction(fn) or authorize is None:
            return self._wrap_async(fn)
        return self._wrap_blocking(fn, authorize)
