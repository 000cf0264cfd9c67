"""Pure logic of the proxy: tool -> intent mapping, the static listing question, the refusal text."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
from mcp_types import ToolAnnotations

from schemas import Action, Decision, DecisionKind
from sluicegate.adapters.refusal import determining_reasons
from sluicegate.errors import InvalidIntent
from sluicegate.mcp.listing import always_blocked
from sluicegate.mcp.mapping import MappingError, MappingFile, ToolMapper, ToolRule, load_mapping
from streams.engine.compiler import compile_policy

AGENT = ("bot-1", "assistant", "production")
POLICY = compile_policy("""
policy: listing
default: BLOCK
rules:
  - {id: reads, match: {tool: "crm.*", action: read}, decision: ALLOW}
  - {id: no-drop, match: {tool: crm.drop}, decision: BLOCK}
  - {id: staging-only, match: {tool: crm.reset, environment: staging}, decision: ALLOW}
  - id: big-exports
    match: {tool: crm.export}
    when: {field: params.rows, op: gt, value: 1000}
    decision: BLOCK
  - {id: exports, match: {tool: crm.export}, decision: ALLOW}
  - {id: vip-notes, match: {tool: crm.note, target: "crm:vip/*"}, decision: BLOCK}
  - {id: notes, match: {tool: crm.note}, decision: ALLOW}
  - {id: other-bot-only, match: {tool: crm.mail, agent_id: other-bot}, decision: ALLOW}
""")


@pytest.mark.parametrize(("annotations", "action"), [
    (None, Action.EXECUTE),
    (ToolAnnotations(read_only_hint=True), Action.READ),
    (ToolAnnotations(destructive_hint=True), Action.DELETE),
    (ToolAnnotations(read_only_hint=False, destructive_hint=False), Action.EXECUTE),
])
def test_the_action_comes_from_the_annotations(annotations: ToolAnnotations | None, action: Action) -> None:
    fields = ToolMapper("crm").tool_call("lookup", annotations, {"id": 7})
    assert (fields.tool, fields.action, fields.target) == ("crm.lookup", action, "mcp:crm")
    assert fields.params == {"id": 7}


def test_the_mapping_overrides_action_and_target_from_the_arguments() -> None:
    mapper = ToolMapper("crm", MappingFile(tools={"note": ToolRule(
        action=Action.UPDATE, target="crm:customer/{customer}", fail_open=True)}))
    fields = mapper.tool_call("note", ToolAnnotations(read_only_hint=True), {"customer": "c9", "text": "x"})
    assert (fields.action, fields.target, fields.fail_open) == (Action.UPDATE, "crm:customer/c9", True)
    assert mapper.static_target("note") is None and mapper.static_target("other") == "mcp:crm"
    with pytest.raises(InvalidIntent, match="needs argument 'customer'"):
        mapper.tool_call("note", None, {"text": "x"})


def test_a_mapping_file_is_validated(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("tools:\n  note: {action: update, target: 'crm:c/{id}'}\nresources: true\n")
    assert load_mapping(good).tools["note"].target == "crm:c/{id}"
    for text in ("tools: {note: {action: fly}}", "tools: {note: {target: 'crm:{a.b}'}}", "extra: 1"):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(MappingError, match=r"bad\.yaml: invalid mapping"):
            load_mapping(bad)


@pytest.mark.parametrize(("tool", "action", "target", "expected"), [
    ("crm.drop", Action.EXECUTE, "mcp:crm", ("no-drop",)),           # a BLOCK rule with no condition
    ("crm.unknown", Action.EXECUTE, "mcp:crm", ("default",)),        # no rule: the default BLOCKs
    ("crm.unknown", Action.READ, "mcp:crm", ()),                      # a read is allowed
    ("crm.reset", Action.EXECUTE, "mcp:crm", ("default",)),          # its rule is for staging only
    ("crm.mail", Action.EXECUTE, "mcp:crm", ("default",)),           # its rule is for another agent
    ("crm.export", Action.EXECUTE, "mcp:crm", ()),                    # BLOCKed only for big exports
    ("crm.note", Action.EXECUTE, "crm:vip/1", ("vip-notes",)),       # a fixed target the BLOCK matches
    ("crm.note", Action.EXECUTE, "crm:std/1", ()),
    ("crm.note", Action.EXECUTE, None, ()),                           # the target depends on the call
])
def test_always_blocked_is_answered_from_the_policy(
    tool: str, action: Action, target: str | None, expected: tuple[str, ...]
) -> None:
    assert always_blocked(POLICY, tool, action, target, AGENT) == expected


def test_the_determining_reasons_are_those_of_what_decided() -> None:
    decision = Decision(request_id=uuid4(), decision=DecisionKind.BLOCK, decided_at=datetime.now(UTC),
                        reasons=("small: ok", "large: too big", "risk>=0.8: risky"),
                        rules=("small", "large", "risk>=0.8"), determining=("large", "risk>=0.8"))
    assert determining_reasons(decision) == ("large: too big", "risk>=0.8: risky")
    assert determining_reasons(decision.model_copy(update={"determining": ()})) == decision.reasons
