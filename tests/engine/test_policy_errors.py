"""Broken policies are rejected whole, each error on the right line."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.engine import PolicyError, compile_policy, load_policy

GOOD = """policy: p
rules:
  - id: a
    match: {tool: x}
    decision: ALLOW
"""

BROKEN = [
    (  # unknown field
        "policy: p\nrules:\n  - id: a\n    decision: ALLOW\n    colour: red\n",
        5, "unknown field 'colour'",
    ),
    (  # bad op
        "policy: p\nrules:\n  - id: a\n    when:\n      field: params.amount\n"
        "      op: less\n      value: 5\n    decision: ALLOW\n",
        6, "op",
    ),
    (  # bad regex
        "policy: p\nrules:\n  - id: a\n"
        "    when: {field: tool, op: regex, value: '(['}\n    decision: ALLOW\n",
        4, "bad regex",
    ),
    (  # unknown time zone
        "policy: p\nschedules:\n  bh:\n    timezone: Mars/Olympus\n    start: '09:00'\n    end: '18:00'\n",
        4, "unknown time zone 'Mars/Olympus'",
    ),
    (  # duplicate id across rules and limits
        "policy: p\nrules:\n  - id: a\n    decision: ALLOW\n"
        "limits:\n  - id: a\n    window: 1h\n    count: 5\n",
        6, "duplicate id 'a'",
    ),
    (  # a limit with no window
        "policy: p\nlimits:\n  - id: l\n    count: 5\n",
        3, "missing field 'window'",
    ),
    (  # approval on a rule that does not require approval
        "policy: p\nrules:\n  - id: a\n    decision: ALLOW\n    approval: {group: g}\n",
        5, "approval is only allowed with decision REQUIRE_APPROVAL",
    ),
    (  # unknown schedule
        "policy: p\nrules:\n  - id: a\n    when:\n      not: {schedule: nights}\n    decision: ALLOW\n",
        5, "unknown schedule 'nights'",
    ),
    (  # numeric op with a string value
        "policy: p\nrules:\n  - id: a\n    when:\n      field: params.amount\n"
        "      op: gt\n      value: ten\n    decision: ALLOW\n",
        7, "needs a number",
    ),
    (  # bad duration
        "policy: p\nlimits:\n  - id: l\n    window: 1 hour\n    count: 5\n",
        4, "window",
    ),
    (  # count and sum together
        "policy: p\nlimits:\n  - id: l\n    window: 1h\n    count: 5\n    sum: params.amount\n    max: 5\n",
        3, "exactly one of count",
    ),
    (  # bad decision
        "policy: p\nrules:\n  - id: a\n    decision: MAYBE\n",
        4, "decision",
    ),
    (  # bad field path
        "policy: p\nrules:\n  - id: a\n    when: {field: amount, op: eq, value: 1}\n    decision: ALLOW\n",
        4, "field",
    ),
    (  # duplicate YAML key
        "policy: p\nrules:\n  - id: a\n    decision: ALLOW\n    decision: BLOCK\n",
        5, "duplicate key 'decision'",
    ),
    (  # YAML syntax
        "policy: p\nrules:\n  - id: a\n   decision: [ALLOW\n",
        4, "YAML",
    ),
    (  # not a mapping
        "- just a list\n",
        1, "must be a YAML mapping",
    ),
    (  # missing name
        "rules: []\n",
        1, "missing field 'policy'",
    ),
]


@pytest.mark.parametrize(("text", "line", "message"), BROKEN)
def test_broken_policy_is_rejected_on_its_line(text: str, line: int, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        compile_policy(text, "broken.yaml")
    issues = caught.value.issues
    assert any(issue.line == line and message in issue.message for issue in issues), issues
    assert all(issue.source == "broken.yaml" for issue in issues)


def test_every_error_is_reported() -> None:
    text = "policy: p\nrules:\n  - id: a\n    decision: NOPE\n  - id: b\n    decision: ALLOW\n    x: 1\n"
    with pytest.raises(PolicyError) as caught:
        compile_policy(text, "p.yaml")
    assert [issue.line for issue in caught.value.issues] == [4, 7]
    assert str(caught.value).splitlines()[0].startswith("p.yaml:4: ")


def test_good_policy_version_is_canonical() -> None:
    first = compile_policy(GOOD, "a.yaml")
    flow = "# a comment\npolicy: p\ndefault: BLOCK\nrules: [{id: a, decision: ALLOW, match: {tool: x}}]\n"
    same = compile_policy(flow, "b.yaml")
    other = compile_policy(GOOD.replace("tool: x", "tool: y"), "c.yaml")
    assert first.version == same.version != other.version
    assert first.version.startswith("sha256:") and len(first.version) == len("sha256:") + 16
    assert first.rule_count == 1 and first.name == "p"


def test_unreadable_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy"):
        load_policy(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(PolicyError, match="empty"):
        load_policy(empty)
