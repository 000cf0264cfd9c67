"""State keys: plain strings a worker can route on.

A window key starts with the limit id, then one ``|name=value`` per key name in the limit's order
(``fleet`` has no value): ``tx-per-hour|agent=agent-7``, ``refund-budget|fleet``,
``per-tool|agent=a1|tool=payments.refund``. A sequence rule's key is built the same way from its id
and names (always ``agent`` first; ``session`` is the intent's ``session_id``, empty when it has
none): ``after-fetch|agent=a1|session=s-9``. A history key is ``<agent_id>|<tool>``. ``%``, ``|`` and
``=`` inside values are percent-encoded, so keys are unambiguous.
"""

from __future__ import annotations

from collections.abc import Callable

from schemas.intent import Intent


def escape(value: str) -> str:
    """Percent-encode the three characters keys use as syntax."""
    if "%" in value or "|" in value or "=" in value:
        return value.replace("%", "%25").replace("|", "%7C").replace("=", "%3D")
    return value


def key_part(name: str, intent: Intent) -> str:
    """One ``|name=value`` segment of a window key for ``intent``."""
    if name == "agent":
        return f"|agent={escape(intent.agent_id)}"
    if name == "tool":
        return f"|tool={escape(intent.tool)}"
    if name == "target":
        return f"|target={escape(intent.target)}"
    if name == "role":
        return f"|role={escape(intent.agent_role)}"
    return "|fleet"


_PARTS: dict[str, Callable[[Intent], str]] = {
    "agent": lambda intent: "|agent=" + escape(intent.agent_id),
    "tool": lambda intent: "|tool=" + escape(intent.tool),
    "target": lambda intent: "|target=" + escape(intent.target),
    "role": lambda intent: "|role=" + escape(intent.agent_role),
}


def _session(intent: Intent) -> str:
    return "|session=" + escape(intent.session_id or "")


def sequence_key_builder(sequence_id: str, names: tuple[str, ...]) -> Callable[[Intent], str]:
    """The trail key of a sequence rule for an intent (``names`` start with ``agent``)."""
    parts = [_session if name == "session" else _PARTS[name] for name in names]
    return lambda intent: sequence_id + "".join(part(intent) for part in parts)


def window_key(limit_id: str, names: tuple[str, ...], intent: Intent) -> str:
    """The window-state key of a limit for ``intent``."""
    return limit_id + "".join(key_part(name, intent) for name in names)


def history_key(agent_id: str, tool: str) -> str:
    """The history-state key of an (agent, tool) pair."""
    return f"{escape(agent_id)}|{escape(tool)}"


def key_builder(limit_id: str, names: tuple[str, ...]) -> Callable[[Intent], str]:
    """A fast ``window_key`` for one limit (the common single-name keys are specialised)."""
    if names == ("agent",):
        prefix = f"{limit_id}|agent="
        return lambda intent: prefix + escape(intent.agent_id)
    if names == ("fleet",):
        key = f"{limit_id}|fleet"
        return lambda intent: key
    if len(names) == 2 and "fleet" not in names:
        first, second = (_PARTS[name] for name in names)
        return lambda intent: limit_id + first(intent) + second(intent)
    return lambda intent: window_key(limit_id, names, intent)
