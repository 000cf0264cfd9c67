"""How an MCP call becomes an intent: the defaults, and the mapping file that overrides them.

A ``tools/call`` of tool ``T`` on the server the proxy calls ``NAME`` is the intent::

    tool   = NAME.T
    action = the mapping's, else from the tool's annotations: readOnlyHint -> read,
             destructiveHint -> delete, otherwise execute
    target = the mapping's template over the arguments ("crm:customer/{customer_id}"), else mcp:NAME
    params = the arguments

The mapping file (YAML) names only what differs::

    tools:
      refund: {action: create, target: "payments:customer/{customer_id}"}
      search: {fail_open: true}          # runs, audited, when governance is unavailable
    resources: true                      # resources/read becomes NAME.resources.read (read, mcp:NAME:<uri>)
    prompts: false                       # prompts pass through (the default)
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas import Action
from sluicegate.errors import InvalidIntent

RESOURCE_TOOL = "resources.read"
"""The intent tool (after ``NAME.``) of a governed ``resources/read``."""
PROMPT_TOOL = "prompts.get"
"""The intent tool (after ``NAME.``) of a governed ``prompts/get``."""


class MappingError(ValueError):
    """A mapping file that cannot be read or does not validate; the message says where."""


class ToolRule(BaseModel):
    """What one tool's intents look like, where the defaults do not fit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Action | None = Field(default=None, description="Overrides the action the annotations give.")
    target: str | None = Field(
        default=None, description="A template over the arguments, e.g. crm:customer/{customer_id}.")
    fail_open: bool = Field(
        default=False, description="Forward the call (audited) when governance is unavailable.")

    @field_validator("target")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                fields = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
            except ValueError as exc:
                raise ValueError(f"not a target template: {exc}") from None
            if any(not name.isidentifier() for name in fields):
                raise ValueError("a target template names arguments only: {argument}")
        return value


class MappingFile(BaseModel):
    """The whole mapping file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tools: dict[str, ToolRule] = Field(default_factory=dict)
    resources: bool = Field(default=False, description="Subject resources/read to policy.")
    prompts: bool = Field(default=False, description="Subject prompts/get to policy.")


class IntentFields(BaseModel):
    """The intent fields of one call (what ``Gate.intent`` needs besides the agent)."""

    model_config = ConfigDict(frozen=True)

    tool: str
    action: Action
    target: str
    params: dict[str, Any]
    fail_open: bool = False


def action_of(annotations: Any) -> Action:
    """The action MCP tool annotations imply: read-only -> read, destructive -> delete, else execute."""
    if annotations is not None and getattr(annotations, "read_only_hint", None):
        return Action.READ
    if annotations is not None and getattr(annotations, "destructive_hint", None):
        return Action.DELETE
    return Action.EXECUTE


class ToolMapper:
    """Intents for the calls to one server, from its name, its tools' annotations and the mapping."""

    def __init__(self, server: str, mapping: MappingFile | None = None) -> None:
        self.server = server
        self.mapping = mapping or MappingFile()
        self.default_target = f"mcp:{server}"

    def rule(self, tool: str) -> ToolRule:
        return self.mapping.tools.get(tool) or ToolRule()

    def static_target(self, tool: str) -> str | None:
        """The target of every call of ``tool``, or None when it depends on the arguments."""
        template = self.rule(tool).target
        if template is None:
            return self.default_target
        return template if "{" not in template else None

    def action(self, tool: str, annotations: Any) -> Action:
        return self.rule(tool).action or action_of(annotations)

    def tool_call(self, tool: str, annotations: Any, arguments: Mapping[str, Any] | None) -> IntentFields:
        """The intent fields of ``tools/call`` ``tool`` with ``arguments``; InvalidIntent when the
        target template names an argument the call does not have."""
        rule = self.rule(tool)
        params = dict(arguments or {})
        target = self.default_target
        if rule.target is not None:
            try:
                target = rule.target.format_map(params)
            except (KeyError, IndexError, ValueError) as exc:
                raise InvalidIntent(f"the target template of {tool!r} needs argument {exc}") from None
        return IntentFields(tool=f"{self.server}.{tool}", action=self.action(tool, annotations),
                            target=target, params=params, fail_open=rule.fail_open)

    def resource_read(self, uri: str) -> IntentFields:
        return IntentFields(tool=f"{self.server}.{RESOURCE_TOOL}", action=Action.READ,
                            target=f"{self.default_target}:{uri}", params={"uri": uri})

    def prompt_get(self, name: str, arguments: Mapping[str, Any] | None) -> IntentFields:
        return IntentFields(tool=f"{self.server}.{PROMPT_TOOL}", action=Action.READ,
                            target=f"{self.default_target}:{name}",
                            params={"name": name, **(arguments or {})})


def load_mapping(path: Path) -> MappingFile:
    """Read and validate a mapping file; MappingError names the file and what is wrong."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return MappingFile.model_validate(raw)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise MappingError(f"{path}: cannot read the mapping: {exc}") from None
    except ValidationError as exc:
        raise MappingError(f"{path}: invalid mapping: {exc}") from None
