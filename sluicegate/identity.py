"""Who is calling: the agent fields of an intent, with per-call overrides for gates serving many agents."""

from __future__ import annotations

from dataclasses import dataclass, replace

from sluicegate.errors import InvalidIntent


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """The agent fields of an intent; any may be None on a gate's default and supplied per call."""

    agent_id: str | None = None
    agent_role: str | None = None
    environment: str | None = None
    owner: str | None = None

    def merged(self, override: AgentIdentity | None) -> AgentIdentity:
        """These defaults with every non-None field of ``override`` taking precedence."""
        if override is None:
            return self
        changes = {name: getattr(override, name) for name in _FIELDS if getattr(override, name) is not None}
        return replace(self, **changes)

    def required(self) -> tuple[str, str, str]:
        """``(agent_id, agent_role, environment)``, or ``InvalidIntent`` naming what is missing."""
        missing = [name for name in _FIELDS[:3] if not getattr(self, name)]
        if missing:
            raise InvalidIntent(
                f"no {', '.join(missing)}: give it to the Gate or to the call (e.g. check(agent_id=...))"
            )
        assert self.agent_id and self.agent_role and self.environment
        return self.agent_id, self.agent_role, self.environment


_FIELDS = ("agent_id", "agent_role", "environment", "owner")
