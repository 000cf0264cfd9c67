"""``sluicegate audit migrate|query|report|sink`` and ``sluicegate backtest``: the analyst's tools.

They open the audit store from ``Settings.audit_url``. On the embedded engine (one process per data
path) a running sink owns the store, so these commands then go through its loopback query endpoint
(see :mod:`consumers.audit_store`); otherwise they open the store themselves. They need the ``audit``
extra (clickhouse-connect with chDB, pyarrow), imported when a command runs.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from infra.clickhouse.migrate import DEFAULT_DATABASE, DEFAULT_TTL_DAYS, MigrationError
from sluicegate.cli.extras import require
from sluicegate.settings import Settings
from streams.engine import PolicyError, load_policy

if TYPE_CHECKING:
    from consumers.analytics import Report
    from consumers.audit_store import QueryResult
    from consumers.backtest import BacktestResult

app = typer.Typer(help="The audit in ClickHouse: schema, queries, reports, the sink.", no_args_is_help=True)
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
Database = Annotated[str, typer.Option("--database", help="The audit database.")]


class Format(StrEnum):
    """Output formats."""

    TABLE = "table"
    CSV = "csv"
    JSON = "json"


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` as a timedelta."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration like 30m, 24h or 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _table(title: str, columns: list[str], rows: list[tuple[Any, ...]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row))
    return table


def _print_result(result: QueryResult, fmt: Format) -> None:
    if fmt is Format.CSV:
        writer = csv.writer(sys.stdout)
        writer.writerow(result.columns)
        writer.writerows(result.rows)
    elif fmt is Format.JSON:
        for row in result.rows:
            typer.echo(json.dumps(dict(zip(result.columns, row, strict=True)), default=str))
    else:
        Console().print(_table("", list(result.columns), result.rows))


@app.command()
def migrate(database: Database = DEFAULT_DATABASE,
            ttl_days: Annotated[int | None, typer.Option(help="Retention; re-applied when given.")] = None
            ) -> None:
    """Create or upgrade the audit schema (idempotent, versioned in schema_migrations)."""
    with require("audit", command="audit migrate"):
        from consumers.audit_store import StoreError, open_store
    try:
        applied = open_store(Settings().audit_url).migrate(database, ttl_days or DEFAULT_TTL_DAYS,
                                                           set_ttl=ttl_days is not None)
    except (StoreError, MigrationError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"applied migrations {applied}" if applied else "schema is up to date")


@app.command()
def users(
    database: Database = DEFAULT_DATABASE,
    sink_user: Annotated[str, typer.Option(help="The sink's insert-only user.")] = "sluicegate_sink",
    reader_user: Annotated[str, typer.Option(help="The readers' readonly=1 user.")] = "sluicegate_reader",
    apply: Annotated[bool, typer.Option(help="Run them on the configured server, as its admin.")] = False,
) -> None:
    """The least-privilege users of a ClickHouse server: print their DDL (passwords from
    SLUICEGATE_CLICKHOUSE_SINK_PASSWORD and SLUICEGATE_CLICKHOUSE_READER_PASSWORD), or --apply it."""
    import os

    from infra.clickhouse.users import create_users, user_statements

    passwords = [os.environ.get(f"SLUICEGATE_CLICKHOUSE_{who}_PASSWORD", "") for who in ("SINK", "READER")]
    settings = Settings()
    try:
        statements = user_statements(database, sink_user, passwords[0], reader_user, passwords[1])
        if apply:
            if settings.audit_url.startswith("chdb"):
                raise _fail("the embedded engine has no users: --apply needs a ClickHouse server URL")
            with require("audit", command="audit users"):
                from infra.clickhouse import open_client
            create_users(open_client(settings.audit_url), database, sink_user, passwords[0], reader_user,
                         passwords[1])
    except (ValueError, MigrationError) as exc:
        raise _fail(str(exc)) from exc
    if apply:
        typer.echo(f"created {sink_user} (insert-only) and {reader_user} (readonly=1)")
    else:
        typer.echo(";\n".join(s.replace(passwords[0], "***").replace(passwords[1], "***")
                              for s in statements) + ";")


@app.command()
def query(sql: Annotated[str, typer.Argument(help="Read-only SQL, e.g. on sluicegate.audit_events.")],
          fmt: Annotated[Format, typer.Option("--format")] = Format.TABLE) -> None:
    """Run one read-only SQL query against the audit."""
    with require("audit", command="audit query"):
        from consumers.audit_store import StoreError, open_store, require_read_only
    try:
        result = open_store(Settings().audit_url).query(require_read_only(sql))
    except StoreError as exc:
        raise _fail(str(exc)) from exc
    _print_result(result, fmt)


def _print_report(report: Report) -> None:
    console = Console()
    console.print(f"[bold]Audit report[/bold] {report.since:%Y-%m-%d %H:%M} .. "
                  f"{report.until:%Y-%m-%d %H:%M} UTC")
    console.print(_table("Decisions", ["decision", "final", "count"], list(report.decisions)))
    console.print(_table("Top blocked agents", ["agent", "blocked"], list(report.blocked_agents)))
    console.print(_table("Top blocked tools", ["tool", "blocked"], list(report.blocked_tools)))
    console.print(_table("Top block reasons", ["determined by", "blocked"], list(report.block_reasons)))
    a = report.approvals
    console.print(_table("Approvals", ["decided", "latency p50 s", "latency p95 s", "expired", "pending"],
                         [(a.decided, a.p50_s if a.p50_s is not None else "-",
                           a.p95_s if a.p95_s is not None else "-", a.expired, a.pending)]))
    console.print(_table("Risk distribution", ["score", "decisions"], list(report.risk)))
    console.print(_table("Agents deviating most from their history",
                         ["agent", "decisions", "mean risk", "history", "deviation", "top factor"],
                         [(d.agent_id, d.decisions, d.recent_risk, d.history_risk, d.deviation, d.top_factor)
                          for d in report.deviating]))


@app.command()
def report(since: Annotated[str, typer.Option(help="Window, e.g. 24h or 7d.")] = "24h",
           database: Database = DEFAULT_DATABASE,
           fmt: Annotated[Format, typer.Option("--format", help="table or json")] = Format.TABLE) -> None:
    """Decision distribution, top blocked, approval latency, expired approvals, risk, deviating agents."""
    with require("audit", command="audit report"):
        from consumers.analytics import build_report
        from consumers.audit_store import StoreError, open_store
    try:
        built = build_report(open_store(Settings().audit_url), database, parse_duration(since))
    except (StoreError, MigrationError) as exc:
        raise _fail(str(exc)) from exc
    if fmt is Format.TABLE:
        _print_report(built)
    else:
        typer.echo(json.dumps(built.to_dict(), default=str))


def _moment(text: str | None) -> datetime | None:
    """``--since``/``--until``: a duration before now (``24h``) or an ISO time (``2026-12-03T10:00Z``)."""
    if text is None:
        return None
    if _DURATION.match(text.strip()):
        return datetime.now(UTC) - parse_duration(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is neither a duration like 24h nor an ISO time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command()
def verify(
    since: Annotated[str | None, typer.Option(help="From then on: 24h (ago) or an ISO time.")] = None,
    until: Annotated[str | None, typer.Option(help="Before then: 1h (ago) or an ISO time.")] = None,
    database: Database = DEFAULT_DATABASE,
    public_key: Annotated[str | None, typer.Option(
        help="The workers' public key (default SLUICEGATE_TRUST_PUBLIC_KEY).")] = None,
    unsigned: Annotated[bool, typer.Option(
        help="Do not check the checkpoints' signatures (trust off: the workers sign nothing).")] = False,
    fmt: Annotated[Format, typer.Option("--format", help="table or json")] = Format.TABLE,
) -> None:
    """Recompute every audit hash chain from ClickHouse; exit 1 naming the first broken link of each."""
    with require("audit", command="audit verify"):
        from consumers.audit_store import StoreError, open_store
        from consumers.audit_verify import Verifier
    settings = Settings()
    key = public_key or settings.trust_public_key
    if key is None and not unsigned:
        raise _fail("the checkpoints' signatures need the workers' public key: set "
                    "SLUICEGATE_TRUST_PUBLIC_KEY or --public-key (or --unsigned when the workers run with "
                    "trust off)")
    try:
        found = Verifier(open_store(settings.audit_url), database, None if unsigned else key).run(
            _moment(since), _moment(until))
    except (StoreError, MigrationError) as exc:
        raise _fail(str(exc)) from exc
    if fmt is Format.JSON:
        typer.echo(json.dumps({"ok": found.ok, "chains": found.chains, "records": found.records,
                               "checkpoints": found.checkpoints, "unchained": found.unchained,
                               "pending": found.pending, "seconds": round(found.seconds, 3),
                               "problems": [str(p) for p in found.problems]}))
    else:
        typer.echo(f"{found.records} records in {found.chains} chains, {found.checkpoints} checkpoints, "
                   f"{found.unchained} unchained records, {found.pending} awaiting a checkpoint "
                   f"({found.seconds:.1f} s)")
        for problem in found.problems:
            typer.echo(f"BROKEN {problem}")
        typer.echo("OK: every chain verifies" if found.ok else f"FAILED: {len(found.problems)} broken chains")
    if not found.ok:
        raise typer.Exit(1)


@app.command()
def sink(database: Database = DEFAULT_DATABASE,
         max_rows: Annotated[int, typer.Option(help="Flush at this many rows.")] = 25_000,
         max_delay: Annotated[float, typer.Option(help="Flush this many seconds after a batch began.")] = 1.0,
         group: Annotated[str, typer.Option(help="Consumer group.")] = "sluicegate-audit-sink") -> None:
    """Run the audit sink (audit + outcome topics -> ClickHouse) until interrupted."""
    with require("audit", command="audit sink"):
        from consumers.audit_sink import main

    settings = Settings()
    main(["--url", settings.audit_url, "--database", database, "--bootstrap", settings.bootstrap_servers,
          "--topic-prefix", settings.topic_prefix, "--group", group, "--max-rows", str(max_rows),
          "--max-delay", str(max_delay)])


def _print_backtest(result: BacktestResult) -> None:
    console = Console()
    console.print(f"replayed {result.replayed} intents through {result.policy_version}: "
                  f"{result.changed} decisions would change")
    console.print(_table("Decisions before -> after", ["before", "after", "count"],
                         [(b.value, a.value, n) for (b, a), n in sorted(result.transitions.items())]))
    rows = []
    for rule, changes in sorted(result.by_rule.items(), key=lambda item: -item[1].count):
        for example in changes.examples:
            rows.append((rule, changes.count, example.request_id, example.agent_id, example.tool,
                         f"{example.before.value} -> {example.after.value}", "; ".join(example.reasons)))
    console.print(_table("Changes by rule (with examples)",
                         ["rule", "changes", "request", "agent", "tool", "decision", "reasons"], rows))


def backtest_command(
    policy: Annotated[Path, typer.Option("--policy", help="The candidate policy YAML.")],
    since: Annotated[str, typer.Option(help="How much history to replay, e.g. 7d.")] = "7d",
    database: Database = DEFAULT_DATABASE,
    fmt: Annotated[Format, typer.Option("--format", help="table or json")] = Format.TABLE,
) -> None:
    """Replay audited intents through a candidate policy and show how decisions would change."""
    with require("audit", command="backtest"):
        from consumers.audit_store import StoreError, open_store
        from consumers.backtest import BacktestError, backtest
    try:
        candidate = load_policy(policy)
        result = backtest(open_store(Settings().audit_url), database, candidate, parse_duration(since))
    except PolicyError as exc:
        raise _fail("\n".join(str(issue) for issue in exc.issues)) from exc
    except (StoreError, MigrationError, BacktestError) as exc:
        raise _fail(str(exc)) from exc
    if fmt is Format.TABLE:
        _print_backtest(result)
        return
    typer.echo(json.dumps({
        "policy_version": result.policy_version, "replayed": result.replayed, "changed": result.changed,
        "transitions": [[b.value, a.value, n] for (b, a), n in result.transitions.items()],
        "by_rule": {rule: {"count": c.count, "examples": [e.request_id for e in c.examples]}
                    for rule, c in result.by_rule.items()},
    }))


def register(root: typer.Typer) -> None:
    """Attach ``audit`` and ``backtest`` to the root command."""
    root.add_typer(app, name="audit")
    root.command("backtest")(backtest_command)
