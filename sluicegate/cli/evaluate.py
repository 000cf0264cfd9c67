"""``sluicegate evaluate``: replay JSON-lines intents through a policy; the backtest primitive."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from streams.engine import InMemoryState, PolicyError, decide_raw, load_policy


def evaluate_command(
    policy_file: Annotated[Path, typer.Option("--policy", help="The policy YAML file.")],
    input_file: Annotated[
        Path | None, typer.Option("--input", help="JSON-lines intents [default: stdin].")
    ] = None,
) -> None:
    """Decide each JSON-lines intent in order, keeping window and history state in event time.

    Writes one JSON Decision per non-blank input line; a malformed line gets a BLOCK
    ``invalid_intent`` decision. Only ALLOWed intents consume limits and teach history.
    """
    try:
        policy = load_policy(policy_file)
    except PolicyError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(1) from None
    state = InMemoryState()
    out = sys.stdout
    with _open(input_file) as lines:
        for line in lines:
            if line.strip():
                out.write(decide_raw(policy, state, line).model_dump_json())
                out.write("\n")
    out.flush()


def _open(path: Path | None) -> AbstractContextManager[BinaryIO]:
    """Bytes, so that invalid UTF-8 is an invalid intent rather than a crash; stdin stays open."""
    if path is None:
        return nullcontext(sys.stdin.buffer)
    return path.open("rb")
