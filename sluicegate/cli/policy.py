"""``sluicegate policy ...``: validate, test and publish policies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streams.engine import PolicyError, load_policy

app = typer.Typer(name="policy", help="Validate, test and publish policies.", no_args_is_help=True)


@app.command("check")
def check(file: Annotated[Path, typer.Argument(help="The policy YAML file.")]) -> None:
    """Validate a policy: print its rule count and version, or every error as file:line: message."""
    try:
        policy = load_policy(file)
    except PolicyError as exc:
        for issue in exc.issues:
            typer.echo(str(issue))
        count = len(exc.issues)
        typer.echo(f"{file}: rejected ({count} error{'s' if count != 1 else ''})", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"{file}: OK: policy {policy.name}, {policy.rule_count} rules, {len(policy.limits)} limits, "
        f"version {policy.version}"
    )


@app.command("test")
def test_policy(
    file: Annotated[Path, typer.Argument(help="The policy YAML file to test.")],
    cases: Annotated[
        Path | None,
        typer.Argument(help="The case file; default: cases/<policy stem>.yaml next to the policy."),
    ] = None,
) -> None:
    """Run table-driven policy tests; exit 1 if a case fails, 2 if the case file or policy is bad."""
    from rich.console import Console

    from sluicegate.policy_testing import (
        CaseFileError,
        default_cases_path,
        load_case_file,
        print_report,
        run_case_file,
    )

    cases_path = cases if cases is not None else default_cases_path(file)
    try:
        case_file = load_case_file(cases_path)
        policy = load_policy(file)
    except CaseFileError as exc:
        typer.echo(f"bad case file: {exc}", err=True)
        raise typer.Exit(2) from None
    except PolicyError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(2) from None
    results = run_case_file(case_file, policy)
    print_report(Console(highlight=False), case_file, policy, results)
    if not all(result.passed for result in results):
        raise typer.Exit(1)


@app.command("publish")
def publish(
    file: Annotated[Path, typer.Argument(help="The policy YAML file to make active.")],
    bootstrap: Annotated[str | None, typer.Option("--bootstrap", help="(default: settings)")] = None,
    topic_prefix: Annotated[str | None, typer.Option("--topic-prefix", help="(default: settings)")] = None,
    serial: Annotated[int | None, typer.Option(
        "--serial", min=1, help="The policy's serial (default: one above the latest published).",
    )] = None,
    allow_rollback: Annotated[bool, typer.Option(
        "--allow-rollback", help="Publish even if the serial is not above the latest published one.",
    )] = False,
) -> None:
    """Validate a policy, sign it with the publisher credential and publish it: every worker switches to it.

    The credential is SLUICEGATE_PUBLISHER_CREDENTIAL (sluicegate trust publisher DIR NAME); without one
    nothing is sent, unless SLUICEGATE_TRUST_OFF=1 (workers with trust off take unsigned policies).
    """
    import asyncio

    from schemas.topics import TopicNames
    from sluicegate.settings import Settings
    from sluicegate.trust import SignerCredential, TrustError
    from streams.policy_source import PolicyPublishError, publish

    settings = Settings()
    credential: SignerCredential | None = None
    if settings.publisher_credential is not None:
        try:
            credential = SignerCredential.parse(settings.publisher_credential.get_secret_value(), "publisher")
        except TrustError as exc:
            typer.echo(f"SLUICEGATE_PUBLISHER_CREDENTIAL: {exc}; nothing published", err=True)
            raise typer.Exit(1) from None
    elif not settings.trust_off:
        typer.echo("no publisher credential: set SLUICEGATE_PUBLISHER_CREDENTIAL (sluicegate trust "
                   "publisher DIR NAME), or SLUICEGATE_TRUST_OFF=1 if the workers run with trust off; "
                   "nothing published", err=True)
        raise typer.Exit(1)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"{file}: cannot read: {exc}", err=True)
        raise typer.Exit(2) from None
    topic = TopicNames(topic_prefix or settings.topic_prefix).policies
    try:
        published = asyncio.run(publish(bootstrap or settings.bootstrap_servers, topic, text, str(file),
                                        credential, serial=serial, allow_rollback=allow_rollback))
    except PolicyError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        typer.echo(f"{file}: rejected, nothing published", err=True)
        raise typer.Exit(1) from None
    except PolicyPublishError as exc:
        typer.echo(f"{file}: {exc}; nothing published", err=True)
        raise typer.Exit(1) from None
    policy, envelope = published.policy, published.envelope
    signed = f"signed by publisher {credential.name}" if credential else "UNSIGNED (trust off)"
    rollback = f", a rollback from serial {published.latest.serial}" \
        if envelope.rollback and published.latest else ""
    typer.echo(f"published {policy.name} {policy.version} serial {envelope.serial}{rollback} to {topic}, "
               f"{signed} (previous: {envelope.previous or 'none'})")
