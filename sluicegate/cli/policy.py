"""``sluicegate policy ...``: validate, test, compare, publish (active or shadow) and promote policies."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from schemas import Intent
from streams.engine import CompiledPolicy, PolicyError, load_policy

if TYPE_CHECKING:
    from sluicegate.settings import Settings
    from sluicegate.trust import SignerCredential

app = typer.Typer(name="policy", help="Validate, test, compare, publish and promote policies.",
                  no_args_is_help=True)
Bootstrap = Annotated[str | None, typer.Option("--bootstrap", help="(default: settings)")]
TopicPrefix = Annotated[str | None, typer.Option("--topic-prefix", help="(default: settings)")]
AsJson = Annotated[bool, typer.Option("--json", help="One JSON object instead of tables.")]
FailOnFlip = Annotated[list[str] | None, typer.Option(
    "--fail-on-flip", help="Exit 1 if intents flip this way, e.g. ALLOW->BLOCK or *->BLOCK (repeatable).",
)]


@app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="The policy YAML file.")],
    strict: Annotated[bool, typer.Option("--strict", help="Warnings are errors (exit 1).")] = False,
    reviewers: Annotated[Path | None, typer.Option(
        "--reviewers", help="The workers' reviewers file: warn about approver groups it lacks.",
    )] = None,
) -> None:
    """Validate a policy: print its rule count and version, or every error as file:line: message; then
    warnings (file:line) for rules that can never apply, ALLOW rules a BLOCK rule covers, limits that
    count nothing and, with --reviewers, approver groups nobody is in."""
    from streams.engine.analysis import analyse

    groups = _reviewer_groups(reviewers) if reviewers is not None else None
    try:
        policy = load_policy(file)
        findings = analyse(file.read_text(encoding="utf-8"), str(file), groups)
    except PolicyError as exc:
        for issue in exc.issues:
            typer.echo(str(issue))
        count = len(exc.issues)
        typer.echo(f"{file}: rejected ({count} error{'s' if count != 1 else ''})", err=True)
        raise typer.Exit(1) from None
    for finding in findings:
        typer.echo(str(finding))
    warned = f", {len(findings)} warning{'s' if len(findings) != 1 else ''}" if findings else ""
    if findings and strict:
        typer.echo(f"{file}: rejected (--strict{warned})", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"{file}: OK: policy {policy.name}, {policy.rule_count} rules, {len(policy.limits)} limits, "
        f"version {policy.version}{warned}"
    )


def _reviewer_groups(path: Path) -> set[str]:
    """The groups of a reviewers file that have members; exit 2 when it cannot be read."""
    import yaml

    from streams.stages.approval_machine import ApprovalError, ReviewerDirectory

    try:
        directory = ReviewerDirectory.load(path)  # the workers' reader: the same refusals
    except ApprovalError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    named = yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    return {group for group in named if directory.members(group)}


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
    bootstrap: Bootstrap = None,
    topic_prefix: TopicPrefix = None,
    serial: Annotated[int | None, typer.Option(
        "--serial", min=1, help="The policy's serial (default: one above the latest published).",
    )] = None,
    allow_rollback: Annotated[bool, typer.Option(
        "--allow-rollback", help="Publish even if the serial is not above the latest published one.",
    )] = False,
    shadow: Annotated[bool, typer.Option(
        "--shadow", help="Publish it as the shadow policy: evaluated and audited beside the active one, "
                         "never enforced (see policy shadow-report, policy promote).",
    )] = False,
) -> None:
    """Validate a policy, sign it with the publisher credential and publish it: every worker switches to it
    (with --shadow: every worker evaluates it beside the active one).

    The credential is SLUICEGATE_PUBLISHER_CREDENTIAL (sluicegate trust publisher DIR NAME); without one
    nothing is sent, unless SLUICEGATE_TRUST_OFF=1 (workers with trust off take unsigned policies).
    """
    import asyncio

    from streams.policy_source import ACTIVE, SHADOW, PolicyPublishError
    from streams.policy_source import publish as publish_text

    settings, credential = _publisher()
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"{file}: cannot read: {exc}", err=True)
        raise typer.Exit(2) from None
    topic = _policies_topic(settings, topic_prefix)
    try:
        published = asyncio.run(publish_text(
            bootstrap or settings.bootstrap_servers, topic, text, str(file), credential, serial=serial,
            allow_rollback=allow_rollback, role=SHADOW if shadow else ACTIVE,
            options=settings.kafka_client_options(),
            replication=(settings.kafka_replication_factor, settings.kafka_min_insync_replicas)))
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
    if shadow:
        typer.echo(f"published {policy.name} {policy.version} as the SHADOW policy to {topic}, {signed} "
                   f"(enforced: {envelope.previous or 'none'})")
        return
    typer.echo(f"published {policy.name} {policy.version} serial {envelope.serial}{rollback} to {topic}, "
               f"{signed} (previous: {envelope.previous or 'none'})")


@app.command("promote")
def promote(
    bootstrap: Bootstrap = None,
    topic_prefix: TopicPrefix = None,
    version: Annotated[str | None, typer.Option(
        "--version", help="Promote only if the shadow policy is this version (sha256:...).",
    )] = None,
) -> None:
    """Make the shadow policy the active one: published again as active (signed with the publisher
    credential, the next serial, audited by the workers as policy_published), which ends the shadow."""
    import asyncio

    from streams.policy_source import PolicyPublishError
    from streams.policy_source import promote as promote_shadow

    settings, credential = _publisher()
    topic = _policies_topic(settings, topic_prefix)
    try:
        published = asyncio.run(promote_shadow(bootstrap or settings.bootstrap_servers, topic, credential,
                                               expect_version=version,
                                               options=settings.kafka_client_options()))
    except (PolicyError, PolicyPublishError) as exc:
        typer.echo(f"{exc}; nothing published", err=True)
        raise typer.Exit(1) from None
    signed = f"signed by publisher {credential.name}" if credential else "UNSIGNED (trust off)"
    typer.echo(f"promoted {published.policy.name} {published.policy.version} to active, serial "
               f"{published.envelope.serial}, {signed} (previous: {published.envelope.previous or 'none'})")


@app.command("diff")
def diff(
    old: Annotated[Path, typer.Argument(help="The policy in force (or the older one).")],
    new: Annotated[Path, typer.Argument(help="The candidate policy.")],
    since: Annotated[str | None, typer.Option(
        "--since", help="Replay the intents audited in this window, e.g. 30d (the default, 7d).",
    )] = None,
    intents: Annotated[Path | None, typer.Option(
        "--intents", help="Replay these JSON-lines intents instead of the audit.",
    )] = None,
    database: Annotated[str, typer.Option("--database", help="The audit database.")] = "sluicegate",
    as_json: AsJson = False,
    fail_on_flip: FailOnFlip = None,
) -> None:
    """Replay past intents in event order through both policies, each with fresh state, and show which
    decisions flip: by kind, by what determined the new decision, by agent and tool, the approvals the
    new policy would add per reviewer group, examples. Exit 1 when a --fail-on-flip kind occurred, 2 on
    bad input."""
    from consumers.policy_diff import diff as diff_policies
    from consumers.policy_diff import in_event_order
    from sluicegate.cli.flip_table import EXIT_BAD_INPUT, fail_patterns, show

    patterns = fail_patterns(fail_on_flip or [])
    if since is not None and intents is not None:
        typer.echo("--since and --intents exclude each other", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    before, after = _load(old), _load(new)
    if intents is not None:
        table = diff_policies(before, after, in_event_order(_read_intents(intents)))
    else:
        table = diff_policies(before, after, _audited(since or "7d", database))
    show(table, "policy diff", as_json, patterns)


@app.command("shadow-report")
def shadow_report(
    since: Annotated[str, typer.Option("--since", help="Window, e.g. 24h or 7d.")] = "24h",
    version: Annotated[str | None, typer.Option(
        "--version", help="The shadow policy version (default: the latest shadow's).",
    )] = None,
    database: Annotated[str, typer.Option("--database", help="The audit database.")] = "sluicegate",
    as_json: AsJson = False,
    fail_on_flip: FailOnFlip = None,
) -> None:
    """What the shadow policy would have done, from the audit: its decisions against the enforced ones
    (the same table as policy diff). Exit 1 when a --fail-on-flip kind occurred."""
    from sluicegate.cli.audit import parse_duration
    from sluicegate.cli.extras import require
    from sluicegate.cli.flip_table import EXIT_BAD_INPUT, fail_patterns, show
    from sluicegate.settings import Settings

    patterns = fail_patterns(fail_on_flip or [])
    with require("audit", command="policy shadow-report"):
        from consumers.audit_store import StoreError, open_store
        from consumers.shadow_report import shadow_report as build
        from infra.clickhouse.migrate import MigrationError
    try:
        table = build(open_store(Settings().audit_url), database, parse_duration(since), version=version)
    except (StoreError, MigrationError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    show(table, "shadow report", as_json, patterns)


def _publisher() -> tuple[Settings, SignerCredential | None]:
    """The settings and the publisher credential (None with trust off); exit 1 without either."""
    from sluicegate.settings import Settings
    from sluicegate.trust import SignerCredential, TrustError

    settings = Settings()
    if settings.publisher_credential is not None:
        try:
            return settings, SignerCredential.parse(settings.publisher_credential.get_secret_value(),
                                                    "publisher")
        except TrustError as exc:
            typer.echo(f"SLUICEGATE_PUBLISHER_CREDENTIAL: {exc}; nothing published", err=True)
            raise typer.Exit(1) from None
    if not settings.trust_off:
        typer.echo("no publisher credential: set SLUICEGATE_PUBLISHER_CREDENTIAL (sluicegate trust "
                   "publisher DIR NAME), or SLUICEGATE_TRUST_OFF=1 if the workers run with trust off; "
                   "nothing published", err=True)
        raise typer.Exit(1)
    return settings, None


def _policies_topic(settings: Settings, topic_prefix: str | None) -> str:
    from schemas.topics import TopicNames

    return TopicNames(topic_prefix or settings.topic_prefix).policies


def _load(file: Path) -> CompiledPolicy:
    """A policy, or exit 2 with every issue."""
    try:
        return load_policy(file)
    except PolicyError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(2) from None


def _read_intents(path: Path) -> list[Intent]:
    """Every intent of a JSON-lines file; exit 2 naming the first line that is not a valid intent."""
    from pydantic import ValidationError

    found: list[Intent] = []
    try:
        with path.open("rb") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    try:
                        found.append(Intent.model_validate_json(line))
                    except ValidationError as exc:
                        typer.echo(f"{path}:{number}: not a valid intent: {exc.errors()[0]['msg']}", err=True)
                        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"{path}: cannot read: {exc}", err=True)
        raise typer.Exit(2) from None
    return found


def _audited(since: str, database: str) -> Iterator[Intent]:
    """The audited intents of the window, in event order (needs the audit extra)."""
    from sluicegate.cli.audit import parse_duration
    from sluicegate.cli.extras import require
    from sluicegate.settings import Settings

    with require("audit", command="policy diff --since"):
        from consumers.audit_store import StoreError, open_store
        from consumers.backtest import BacktestError, audited_intents
        from infra.clickhouse.migrate import MigrationError
    window = parse_duration(since)
    until = datetime.now(UTC)
    try:
        history = list(audited_intents(open_store(Settings().audit_url), database, until - window, until))
    except (StoreError, MigrationError, BacktestError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    return iter([audited.intent for audited in history])
