"""Broken policies are rejected whole, each error on the right line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from schemas import DecisionKind
from schemas.policy import MAX_LIMIT_COUNT, MAX_REGEX_LENGTH
from streams.engine import InMemoryState, PolicyError, compile_policy, evaluate, load_policy
from streams.engine.loader import MAX_POLICY_BYTES
from tests.engine.helpers import intent

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
    (  # a YAML anchor (and its alias): refused at the anchor
        "policy: p\nrules:\n  - id: a\n    when: &c {field: tool, op: eq, value: x}\n    decision: ALLOW\n"
        "  - id: b\n    when: *c\n    decision: ALLOW\n",
        4, "anchors (&c) are not allowed",
    ),
    (  # a merge key needs an alias: refused too
        "policy: p\nschedules:\n  a: &day {start: '09:00', end: '17:00'}\n  b:\n    <<: *day\n",
        3, "anchors (&day) are not allowed",
    ),
    (  # nesting deeper than MAX_DEPTH
        "policy: p\nrules:\n  - id: a\n    when: " + "{not: " * 70 + "{schedule: s}" + "}" * 70
        + "\n    decision: ALLOW\n",
        4, "nested more than 64 levels deep",
    ),
    (  # a regex RE2 does not accept (backreference)
        "policy: p\nrules:\n  - id: a\n"
        "    when: {field: tool, op: regex, value: '(a)\\1'}\n    decision: ALLOW\n",
        4, "bad regex",
    ),
    (  # a regex longer than MAX_REGEX_LENGTH
        "policy: p\nrules:\n  - id: a\n"
        f"    when: {{field: tool, op: regex, value: '{'a' * (MAX_REGEX_LENGTH + 1)}'}}\n"
        "    decision: ALLOW\n",
        4, f"at most {MAX_REGEX_LENGTH}",
    ),
    (  # a limit window over MAX_LIMIT_WINDOW
        "policy: p\nlimits:\n  - id: l\n    window: 32d\n    count: 5\n",
        4, "longer than the largest allowed, 31d",
    ),
    (  # the same in hours
        "policy: p\nlimits:\n  - id: l\n    window: 745h\n    count: 5\n",
        4, "longer than the largest allowed",
    ),
    (  # a count over MAX_LIMIT_COUNT
        f"policy: p\nlimits:\n  - id: l\n    window: 1h\n    count: {MAX_LIMIT_COUNT + 1}\n",
        5, f"less than or equal to {MAX_LIMIT_COUNT}",
    ),
    (  # a burst window over MAX_BURST_WINDOW
        "policy: p\nrisk:\n  history:\n    burst: {window: 25h, weight: 0.5}\n",
        4, "longer than the largest allowed, 1d",
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


def test_the_largest_bounds_are_accepted() -> None:
    compiled = compile_policy(
        f"policy: p\nlimits:\n  - id: l\n    window: 31d\n    count: {MAX_LIMIT_COUNT}\n"
        "risk:\n  history:\n    burst: {window: 24h, weight: 0.5}\n", "p.yaml",
    )
    assert compiled.limits[0].window_ms == 31 * 86_400_000 and compiled.limits[0].count == MAX_LIMIT_COUNT


def test_a_policy_over_one_mib_is_refused_on_the_line_crossing_it() -> None:
    padding = "".join(f"# comment line {i:06d} {'x' * 40}\n" for i in range(MAX_POLICY_BYTES // 64))
    small = GOOD + padding
    assert len(small.encode()) <= MAX_POLICY_BYTES
    assert compile_policy(small, "ok.yaml").name == "p"
    big = small + "# " + "y" * (MAX_POLICY_BYTES - len(small.encode())) + "\n"
    with pytest.raises(PolicyError, match=r"at most 1,048,576 \(1 MiB\)") as caught:
        compile_policy(big, "big.yaml")
    assert caught.value.issues[0].line == big.count("\n")  # the last line crosses the bound


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    lines = ["policy: p", "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    started = time.perf_counter()
    with pytest.raises(PolicyError, match=r"anchors \(&a0\) are not allowed") as caught:
        compile_policy("\n".join(lines) + "\n", "bomb.yaml")
    assert time.perf_counter() - started < 1.0
    assert caught.value.issues[0].line == 2


def test_regex_does_not_backtrack_catastrophically() -> None:
    """``(a+)+$`` against 64 KiB of a's and one b: exponential for a backtracking engine."""
    compiled = compile_policy(
        "policy: p\ndefault: ALLOW\nrules:\n  - id: redos\n"
        "    when: {field: params.s, op: regex, value: '(a+)+$'}\n    decision: BLOCK\n", "redos.yaml",
    )
    text = "a" * (64 * 1024 - 64) + "b"
    started = time.perf_counter()
    decision = evaluate(compiled, InMemoryState(), intent(params={"s": text})).decision
    elapsed = time.perf_counter() - started
    assert decision.decision is DecisionKind.ALLOW  # no match: ends in b
    assert elapsed < 0.5, f"regex took {elapsed:.2f} s"
    matching = evaluate(compiled, InMemoryState(), intent(params={"s": "a" * 1000})).decision
    assert matching.decision is DecisionKind.BLOCK and matching.rules == ("redos",)
