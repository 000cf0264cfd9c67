"""Render the text templates shipped next to this module (``@NAME@`` placeholders)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib.resources import files

_PLACEHOLDER = re.compile(r"@[A-Z][A-Z0-9_]*@")


def render(template: str, values: Mapping[str, object]) -> str:
    """Replace every ``@NAME@`` by ``values[NAME]``; a placeholder without a value is an error."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(0)[1:-1]
        if name not in values:
            raise KeyError(f"template placeholder {match.group(0)} has no value")
        return str(values[name])

    return _PLACEHOLDER.sub(substitute, template)


def render_file(name: str, values: Mapping[str, object]) -> str:
    """Render the packaged template ``name`` (e.g. ``server.properties``)."""
    return render(files("infra.kafka").joinpath(name).read_text(encoding="utf-8"), values)
