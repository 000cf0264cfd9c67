"""Read a policy file into a validated :class:`PolicyDocument`, with every error on its line.

:func:`parse_yaml` and :func:`line_of` are the one YAML-with-line-numbers reader: policy case files
(:mod:`sluicegate.policy_testing`) use them too.

A policy is untrusted input until it verifies (workers read whatever is on the policies topic), so the
reader bounds it: at most :data:`MAX_POLICY_BYTES`, no YAML anchors or aliases (an alias bomb expands a
few lines into gigabytes), nesting at most :data:`MAX_DEPTH` deep. Each refusal names its line."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError
from yaml.composer import ComposerError

from schemas.policy import Loc, PolicyDocument, check_document
from streams.engine.errors import PolicyError, PolicyIssue

Lines = dict[Loc, int]

MAX_POLICY_BYTES = 1 << 20
"""The largest policy document (1 MiB of UTF-8)."""
MAX_DEPTH = 64
"""The deepest nesting of YAML collections in a policy (conditions nest; 64 is far more than needed)."""


class _Composer(yaml.SafeLoader):
    """SafeLoader refusing anchors and aliases (when asked) and nesting deeper than ``max_depth``."""

    def __init__(self, text: str, *, aliases: bool) -> None:
        super().__init__(text)
        self.aliases = aliases
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        if not self.aliases and isinstance(event, yaml.AliasEvent):
            raise ComposerError(None, None, f"aliases (*{event.anchor}) are not allowed in a policy", mark)
        if not self.aliases and getattr(event, "anchor", None):
            raise ComposerError(None, None, f"anchors (&{event.anchor}) are not allowed in a policy", mark)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _walk(node: yaml.Node, loc: Loc, lines: Lines, duplicates: list[tuple[Loc, int, str]]) -> None:
    """Record the line of every mapping key and sequence item, and note duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                duplicates.append(((*loc, key), line, f"duplicate key {key!r}"))
            seen.add(key)
            lines.setdefault((*loc, key), line)
            _walk(value_node, (*loc, key), lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*loc, index)] = item.start_mark.line + 1
            _walk(item, (*loc, index), lines, duplicates)


def document_path(loc: Loc, lines: Lines) -> Loc:
    """The part of a pydantic location that exists in the document (union member tags dropped)."""
    path: Loc = ()
    for part in loc:
        if (*path, part) in lines:
            path = (*path, part)
    return path


def line_of(loc: Loc, lines: Lines) -> int:
    """The line of the deepest node of ``loc`` found in the document."""
    return lines.get(document_path(loc, lines), 1)


def parse_yaml(text: str, source: str, *, aliases: bool = True) -> tuple[Any, Lines]:
    """Parse one YAML document, returning the data (None when empty) and the line of every mapping key
    and sequence item by location (see :func:`line_of`). Syntax errors, duplicate keys, nesting deeper
    than :data:`MAX_DEPTH` and (unless ``aliases``) anchors and aliases raise PolicyError, each issue
    on its line."""
    loader = _Composer(text, aliases=aliases)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise PolicyError([PolicyIssue(source, line, f"YAML: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise PolicyError([PolicyIssue(source, 1, f"YAML: {exc}")]) from None
    finally:
        loader.dispose()
    lines: Lines = {}
    duplicates: list[tuple[Loc, int, str]] = []
    _walk(node, (), lines, duplicates)
    if duplicates:
        raise PolicyError([PolicyIssue(source, line, message) for _, line, message in duplicates])
    return data, lines


def _describe(error: Any, lines: Lines) -> str:
    loc = ".".join(str(part) for part in document_path(error["loc"], lines))
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return f"unknown field {error['loc'][-1]!r}"
    if kind == "missing":
        return f"missing field {error['loc'][-1]!r}"
    message = message.removeprefix("Value error, ")
    return f"{loc}: {message}" if loc else message


def check_size(text: str, source: str) -> None:
    """PolicyError when ``text`` is over :data:`MAX_POLICY_BYTES` (reported on the line crossing it)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_POLICY_BYTES:
        line = text.encode("utf-8", "surrogatepass")[:MAX_POLICY_BYTES + 1].count(b"\n") + 1
        raise PolicyError([PolicyIssue(
            source, line, f"the policy is {size:,} bytes: at most {MAX_POLICY_BYTES:,} (1 MiB)",
        )])


def load_document(text: str, source: str) -> PolicyDocument:
    """Validate the YAML text of a policy; every problem is reported with its line."""
    check_size(text, source)
    data, lines = parse_yaml(text, source, aliases=False)
    if data is None:
        raise PolicyError([PolicyIssue(source, 1, "the policy file is empty")])
    if not isinstance(data, dict):
        raise PolicyError([PolicyIssue(source, 1, "a policy must be a YAML mapping (policy:, rules:, ...)")])
    try:
        doc = PolicyDocument.model_validate(data)
    except ValidationError as exc:
        unique = {
            PolicyIssue(source, line_of(error["loc"], lines), _describe(error, lines)): None
            for error in exc.errors(include_url=False)
        }
        raise PolicyError(list(unique)) from None
    problems = check_document(doc)
    if problems:
        raise PolicyError([PolicyIssue(source, line_of(loc, lines), message) for loc, message in problems])
    return doc
