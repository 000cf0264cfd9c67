"""Printing the flip table of ``policy diff`` and ``policy shadow-report``, and its exit code for CI."""

from __future__ import annotations

import json
from collections.abc import Sequence

import typer
from rich.console import Console
from rich.table import Table

from consumers.policy_diff import FlipTable, check_pattern

EXIT_FLIPPED = 1
"""Exit code when a ``--fail-on-flip`` kind occurred."""
EXIT_BAD_INPUT = 2
"""Exit code for a policy, file or option that cannot be used."""


def fail_patterns(patterns: Sequence[str]) -> list[str]:
    """The ``--fail-on-flip`` values, checked (exit 2 on a bad one)."""
    try:
        return [check_pattern(pattern) for pattern in patterns]
    except ValueError as exc:
        typer.echo(f"--fail-on-flip: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _table(title: str, columns: list[str], rows: Sequence[tuple[object, ...]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(value) for value in row))
    return table


def show(table: FlipTable, title: str, as_json: bool, fail_on: Sequence[str]) -> None:
    """Print the table (readable or one JSON object), then exit 1 if a ``fail_on`` kind flipped."""
    failing = {pattern: table.matches(pattern) for pattern in fail_on}
    if as_json:
        typer.echo(json.dumps({**table.to_dict(), "fail_on_flip": failing}))
    else:
        _print(table, title)
    hit = {pattern: n for pattern, n in failing.items() if n}
    if hit:
        if not as_json:
            typer.echo("failing flips: " + ", ".join(f"{p} ({n})" for p, n in hit.items()), err=True)
        raise typer.Exit(EXIT_FLIPPED)


def _print(table: FlipTable, title: str) -> None:
    console = Console(highlight=False)
    flipped = sum(table.flips.values())
    console.print(f"[bold]{title}[/bold] {table.before_version or '?'} -> {table.after_version or '?'}: "
                  f"{table.compared} intents compared, {flipped} would flip, over {table.span_hours:.2f} h")
    if not flipped:
        return
    console.print(_table("Flips by kind", ["flip", "intents"], list(table.flips.most_common())))
    console.print(_table("By what determined the new decision", ["determined by", "flips"],
                         list(table.by_rule.most_common(10))))
    console.print(_table("By agent", ["agent", "flips"], list(table.by_agent.most_common(10))))
    console.print(_table("By tool", ["tool", "flips"], list(table.by_tool.most_common(10))))
    per_hour = table.approvals_per_hour()
    if per_hour:
        console.print(_table("Approvals it would add", ["reviewer group", "requests", "per hour"],
                             [(group, table.approvals_added[group], f"{rate:g}")
                              for group, rate in per_hour.items()]))
    rows = [(kind, flip.request_id, flip.agent_id, flip.tool, f"{flip.occurred_at:%Y-%m-%d %H:%M:%S}",
             "; ".join(flip.reasons)) for kind, flips in table.examples.items() for flip in flips]
    console.print(_table("Examples", ["flip", "request", "agent", "tool", "at", "reasons"], rows))
