"""Who is calling: the agent fields of an intent, from the agents' credentials when the gate holds any.

With credentials (trust on), an intent's ``agent_id``, ``agent_role``, ``environment`` and
``agent_owner`` are its credential's: they are bound into the key that authenticates it, so a call
names only *which* of the gate's agents it acts for (``agent_id=``), and a role, environment or owner
other than that credential's is an ``InvalidIntent``. Without credentials (trust off) the fields are
whatever the gate and the call say, per-call overrides taking precedence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from sluicegate.errors import InvalidCredential, InvalidIntent
from sluicegate.trust import AgentCredential, TrustError

CredentialLike = AgentCredential | str
"""A credential, or its printed line (``sga1.<key id>.<identity>.<key>``)."""
CredentialsLike = Iterable[CredentialLike] | Mapping[str, CredentialLike]
"""Several agents' credentials: a sequence, or a mapping from agent id to credential."""


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """The agent fields of an intent; any may be None on a gate's default and supplied per call."""

    agent_id: str | None = None
    agent_role: str | None = None
    environment: str | None = None
    owner: str | None = None

    @classmethod
    def of(cls, credential: AgentCredential) -> AgentIdentity:
        """The identity a credential fixes."""
        return cls(credential.agent_id, credential.role, credential.environment, credential.owner)

    @property
    def given(self) -> bool:
        """Whether any field is set."""
        return any(getattr(self, name) is not None for name in _FIELDS)

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

    def conflicts(self, credential: AgentCredential) -> list[str]:
        """The fields set here that differ from ``credential``'s, as ``name 'value'`` texts."""
        fixed = AgentIdentity.of(credential)
        return [
            f"{name} {getattr(self, name)!r} (its credential says {getattr(fixed, name)!r})"
            for name in _FIELDS
            if getattr(self, name) is not None and getattr(self, name) != getattr(fixed, name)
        ]


_FIELDS = ("agent_id", "agent_role", "environment", "owner")


def parse_credential(credential: CredentialLike) -> AgentCredential:
    """A credential object from itself or its printed line; ``InvalidCredential`` when unreadable."""
    if isinstance(credential, AgentCredential):
        return credential
    try:
        return AgentCredential.parse(credential)
    except (TrustError, AttributeError) as exc:
        raise InvalidCredential(f"unreadable agent credential: {exc}") from exc


def collect_credentials(*sources: CredentialLike | CredentialsLike | None) -> dict[str, AgentCredential]:
    """The credentials of ``sources`` by agent id; ``InvalidCredential`` when two disagree."""
    found: dict[str, AgentCredential] = {}
    for source in sources:
        if source is None:
            continue
        if isinstance(source, AgentCredential | str):
            items: list[tuple[str | None, CredentialLike]] = [(None, source)]
        elif isinstance(source, Mapping):
            items = list(source.items())
        else:
            items = [(None, item) for item in source]
        for named, item in items:
            credential = parse_credential(item)
            if named is not None and named != credential.agent_id:
                raise InvalidCredential(f"the credential under {named!r} is agent {credential.agent_id!r}'s")
            known = found.setdefault(credential.agent_id, credential)
            if known != credential:
                raise InvalidCredential(f"two different credentials for agent {credential.agent_id!r}")
    return found


class Identities:
    """The agents a gate acts for, and where their identity comes from (credentials, or the caller)."""

    def __init__(self, default: AgentIdentity, credentials: Mapping[str, AgentCredential]) -> None:
        self.credentials = dict(credentials)
        self._fixed = {agent_id: AgentIdentity.of(held) for agent_id, held in self.credentials.items()}
        if not self.credentials:
            self.default = default
            return
        agent_id = default.agent_id
        if agent_id is None and len(self.credentials) == 1:
            (agent_id,) = self.credentials
        if agent_id is None:
            if default.given:
                raise InvalidIntent("this gate holds several agents' credentials, which fix their role, "
                                    "environment and owner: name the default agent (agent_id=) or leave "
                                    "them out")
            self.default = default
            return
        credential = self._credential(agent_id)
        self._refuse_conflicts(default, credential)
        self.default = AgentIdentity.of(credential)

    @property
    def trusted(self) -> bool:
        """Whether intents are authenticated (the gate holds credentials)."""
        return bool(self.credentials)

    def resolve(self, override: AgentIdentity | None) -> tuple[AgentIdentity, AgentCredential | None]:
        """The identity of one call, and the credential it is signed with (None: trust off)."""
        if not self.credentials:
            return self.default.merged(override), None
        agent_id = (override.agent_id if override is not None else None) or self.default.agent_id
        if agent_id is None:
            raise InvalidIntent(f"no agent_id: this gate holds credentials for {self._names()}; name the "
                                "agent the call acts for (e.g. check(agent_id=...))")
        credential = self._credential(agent_id)
        if override is not None:
            self._refuse_conflicts(override, credential)
        return self._fixed[agent_id], credential

    def credential_for(self, agent_id: str, role: str, environment: str,
                       owner: str | None) -> AgentCredential | None:
        """The credential an intent with these fields is signed with (None: trust off);
        ``InvalidIntent`` when the gate has none for it or the fields are not the credential's."""
        if not self.credentials:
            return None
        credential = self._credential(agent_id)
        if (role, environment, owner) != (credential.role, credential.environment, credential.owner):
            claimed = AgentIdentity(agent_id, role, environment, owner)
            conflicts = claimed.conflicts(credential) or [f"owner {owner!r} (its credential says "
                                                          f"{credential.owner!r})"]
            raise InvalidIntent(f"the intent of agent {agent_id!r} claims {'; '.join(conflicts)}: "
                                "its identity comes from its credential")
        return credential

    def _credential(self, agent_id: str) -> AgentCredential:
        credential = self.credentials.get(agent_id)
        if credential is None:
            raise InvalidIntent(f"no credential for agent {agent_id!r}: this gate holds credentials for "
                                f"{self._names()} (sluicegate trust agent issues one)")
        return credential

    def _refuse_conflicts(self, claimed: AgentIdentity, credential: AgentCredential) -> None:
        conflicts = claimed.conflicts(credential)
        if conflicts:
            raise InvalidIntent(f"agent {credential.agent_id!r} cannot act with {'; '.join(conflicts)}: "
                                "its identity comes from its credential")

    def _names(self) -> str:
        names = sorted(self.credentials)
        shown = ", ".join(repr(name) for name in names[:5])
        return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")
