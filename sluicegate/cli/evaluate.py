"""``sluicegate evaluate``: replay JSON-lines intents through a policy, the backtest primitive; and
``sluicegate explain``: why a policy decides one intent as it does."""

from __future__ import annotations

import json
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from streams.engine import CompiledPolicy, InMemoryState, PolicyError, decide_raw, load_policy


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
    policy = _policy(policy_file)
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


def explain_command(
    policy_file: Annotated[Path, typer.Option("--policy", help="The policy YAML file.")],
    history: Annotated[Path | None, typer.Option(
        "--history", help="JSON-lines intents decided first, in order (windows and history state).",
    )] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of text.")] = False,
) -> None:
    """Explain the decision on the JSON intent on stdin: every rule, limit, risk factor and threshold,
    whether it applied and, if not, the first condition that failed with the value seen; what determined
    the decision, and the decision. Exit 1 for a bad policy, 2 for an input that is not an intent."""
    from pydantic import ValidationError

    from schemas import Intent
    from streams.engine.explain import explain
    from streams.engine.loader import parse_yaml

    policy = _policy(policy_file)
    state = InMemoryState()
    if history is not None:
        with _open(history) as lines:
            for line in lines:
                if line.strip():
                    decide_raw(policy, state, line)
    try:
        intent = Intent.model_validate_json(sys.stdin.buffer.read())
    except ValidationError as exc:
        typer.echo(f"not a valid intent: {exc}", err=True)
        raise typer.Exit(2) from None
    _, lines_of = parse_yaml(policy_file.read_text(encoding="utf-8"), str(policy_file))
    found = explain(policy, intent, state, lines_of)
    typer.echo(json.dumps(found.to_dict()) if as_json else found.render())


def _policy(path: Path) -> CompiledPolicy:
    """A policy, or exit 1 with every issue."""
    try:
        return load_policy(path)
    except PolicyError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(1) from None
