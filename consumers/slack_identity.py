"""Which reviewer a Slack user is: a configurable mapping from Slack user ids to reviewer identities."""

from __future__ import annotations

from pathlib import Path

import yaml


class SlackIdentityError(ValueError):
    """The identity mapping file is missing or malformed."""


class SlackIdentityMap:
    """Slack user id (``U012AB3CD``) -> reviewer name used by the approver groups.

    File format (YAML)::

        users:
          U012AB3CD: alice
          U045EF6GH: bob
    """

    def __init__(self, users: dict[str, str] | None = None) -> None:
        self._users = dict(users or {})

    @classmethod
    def from_mapping(cls, data: object, source: str = "<mapping>") -> SlackIdentityMap:
        """Build from ``{"users": {slack_user_id: reviewer}}``; raise SlackIdentityError otherwise."""
        users = data.get("users") if isinstance(data, dict) else None
        if not isinstance(users, dict):
            raise SlackIdentityError(f"{source}: expected a 'users' mapping of Slack id -> reviewer")
        for user_id, reviewer in users.items():
            if not isinstance(user_id, str) or not isinstance(reviewer, str) or not reviewer.strip():
                raise SlackIdentityError(f"{source}: entry {user_id!r} must map an id to a name")
        return cls({user_id: reviewer.strip() for user_id, reviewer in users.items()})

    @classmethod
    def load(cls, path: Path) -> SlackIdentityMap:
        """Read the YAML mapping file."""
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise SlackIdentityError(f"cannot read Slack reviewer mapping {path}: {exc}") from exc
        return cls.from_mapping(data, str(path))

    def reviewer_for(self, slack_user_id: str) -> str | None:
        """The reviewer identity of a Slack user, or None when the user is not mapped."""
        return self._users.get(slack_user_id)
