"""The ``arbiter`` command line: each command builds settings and calls one service function.

Start-up problems (``ConfigError``) print one line naming the thing and the fix and
exit with status 2; nothing prints a traceback at a user for a configuration mistake.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from app.cli_deliveries import deliveries_app
from app.cli_keys import keys_app
from app.cli_models import explain, models_app
from app.cli_trainer import train, trainer
from app.errors import ConfigError
from app.logs import configure_logging
from app.settings import Settings

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Arbiter: events in, decisions out."
)
rules_app = typer.Typer(no_args_is_help=True, help="Author and check rule files.")
db_app = typer.Typer(no_args_is_help=True, help="The decision ledger database.")
schemas_app = typer.Typer(no_args_is_help=True, help="Event and decision contracts.")
app.add_typer(rules_app, name="rules")
app.add_typer(db_app, name="db")
app.add_typer(schemas_app, name="schemas")
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(deliveries_app, name="deliveries")
app.command("explain")(explain)
app.command("train")(train)
app.command("trainer")(trainer)

console = Console()
err = Console(stderr=True)
T = TypeVar("T")


def _settings(**overrides: Any) -> Settings:
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"ARBITER_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        _fail(f"invalid settings: {problems}")
    configure_logging(settings.log.format, settings.log.level)
    return settings


def _fail(message: str) -> typer.Exit:
    err.print("[bold red]error:[/]", escape(message), highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(make())
    except ConfigError as exc:
        raise _fail(str(exc)) from None


@app.command()
def run() -> None:
    """Consume events.<type>, decide, publish decisions.<type>; stop cleanly on SIGTERM/SIGINT."""
    settings = _settings()
    from app.processes.run import run_service

    _run(lambda: run_service(settings))


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="How many events the simulator sends.")] = 3000,
    rate: Annotated[float, typer.Option(help="Events per second; 0 = as fast as possible.")] = 500,
    seed: Annotated[int, typer.Option(help="Simulator seed (same seed, same events).")] = 7,
    retrain: Annotated[
        bool, typer.Option(help="Retrain models with enough new outcomes after the stream.")
    ] = True,
    stay: Annotated[
        bool | None,
        typer.Option(
            help="Keep the dashboard up after the summary until Ctrl-C (default: on a terminal)."
        ),
    ] = None,
) -> None:
    """Run everything on embedded defaults: broker, SQLite, models, rules, simulator,
    trainer."""
    # The live panel and the summary tell the story; per-event log lines would scroll over it.
    settings = _settings(log_level="error", kafka_bootstrap=None)
    from app.processes.demo import run_demo

    if settings.kafka.bootstrap:
        settings = settings.replace(kafka_bootstrap=None)
    _run(
        lambda: run_demo(
            settings,
            events=events,
            rate=rate,
            seed=seed,
            console=console,
            retrain=retrain,
            stay=stay,
        )
    )


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1; 0 picks one.")] = 9092,
) -> None:
    """Start the embedded Kafka-compatible broker (Tansu) in the foreground until Ctrl-C."""
    import time

    from connectors.broker import EmbeddedBroker

    try:
        with EmbeddedBroker(port or None) as b:
            console.print(
                f"Tansu listening on [bold]{b.bootstrap}[/] (memory storage). Ctrl-C stops it."
            )
            sys.stdout.flush()
            while True:
                time.sleep(3600)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        console.print("broker stopped")


@app.command()
def simulate(
    bootstrap: Annotated[str, typer.Option(help="Kafka bootstrap host:port.")],
    events: Annotated[int, typer.Option(help="How many events to send.")] = 1000,
    rate: Annotated[
        float, typer.Option(help="Messages per second, outcomes included; 0 = as fast as possible.")
    ] = 0,
    seed: Annotated[int, typer.Option(help="Same seed, same events.")] = 7,
    malformed_rate: Annotated[float, typer.Option(help="Share of deliberately bad events.")] = 0.02,
    outcomes: Annotated[
        bool, typer.Option(help="Also send each valid event's outcome to outcomes.<type>, later.")
    ] = True,
    label_noise: Annotated[
        float, typer.Option(help="Share of outcomes with a wrong label.")
    ] = 0.02,
    drift_at: Annotated[
        int | None, typer.Option(help="From this event on, transaction fraud looks different.")
    ] = None,
    topic_prefix: Annotated[str, typer.Option(help="Prefix of the topic names.")] = "",
) -> None:
    """Send a realistic, seeded mix of orders, tickets and transactions to any Kafka."""
    from app.processes.simulate import emit
    from app.simulator.generate import generate

    settings = _settings(topic_prefix=topic_prefix)
    try:
        stream = generate(
            events,
            seed=seed,
            malformed_rate=malformed_rate,
            outcomes=outcomes,
            label_noise=label_noise,
            drift_at=drift_at,
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    events_sent = 0  # emit's on_sent counts events, its return value every message

    def on_sent(n: int) -> None:
        nonlocal events_sent
        events_sent += n

    sent = _run(
        lambda: emit(
            bootstrap,
            stream,
            topic_for=lambda t: settings.topic("events", t),
            outcome_topic_for=lambda t: settings.topic("outcomes", t),
            rate=rate,
            on_sent=on_sent,
        )
    )
    console.print(f"sent {events_sent:,} events and {sent - events_sent:,} outcomes to {bootstrap}")


@rules_app.command("check")
def rules_check(
    rules_dir: Annotated[Path | None, typer.Option("--dir", help="Folder of rule files.")] = None,
) -> None:
    """Validate every rule file; print each problem with file, line, rule and fix."""
    from app.inference.catalog import SCORE_TYPES
    from app.rules.loader import check_rules
    from schemas import field_types

    settings = _settings(rules_dir=rules_dir)
    types = {t: field_types(t) for t in settings.event_types}
    scores = {t: SCORE_TYPES[t] for t in settings.event_types}
    rulesets, problems = check_rules(settings.rules.dir, types, scores)
    for problem in problems:
        err.print("[red]✗[/]", escape(str(problem)), highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    for name, ruleset in sorted(rulesets.items()):
        console.print(
            f"[green]✓[/] {name}: {len(ruleset.rules)} rules, default "
            f"'{ruleset.default_decision}', version {ruleset.version}"
        )


@rules_app.command("test")
def rules_test(
    rules_dir: Annotated[Path | None, typer.Option("--dir", help="Folder of rule files.")] = None,
) -> None:
    """Run the `tests:` of every rule file: pass/fail with a diff, then rule coverage."""
    from app.rules.authoring.testing import run_rule_tests
    from app.wiring import rule_vocabulary

    settings = _settings(rules_dir=rules_dir)
    report = run_rule_tests(settings.rules.dir, *rule_vocabulary(settings))
    for problem in report.problems:
        err.print("[red]✗[/]", escape(str(problem)), highlight=False, soft_wrap=True)
    for case in report.results:
        _print_case(case)
    for item in report.coverage:
        console.print(escape(item.line), highlight=False, soft_wrap=True)
    failed = len(report.failed)
    passed = len(report.results) - failed
    summary = f"{passed} passed, {failed} failed"
    if report.problems:
        summary += f", {len(report.problems)} problem(s) in the files"
    console.print(("[green]" if report.ok else "[red]") + summary + "[/]")
    if not report.ok:
        raise typer.Exit(1)


def _print_case(case: Any) -> None:
    from app.rules.authoring.cases import CaseResult
    from app.rules.authoring.testing import format_action

    assert isinstance(case, CaseResult)
    test = case.test
    where = f"{test.source.file}:{test.source.line}"
    mark = "[green]✓[/]" if case.passed else "[red]✗[/]"
    console.print(mark, escape(f"{where} {test.name}"), highlight=False, soft_wrap=True)
    if case.error is not None:
        console.print("    " + escape(case.error), highlight=False, soft_wrap=True)
        return
    if case.passed or case.result is None:
        return

    def listed(items: Any) -> str:
        return "[" + ", ".join(str(i) for i in items) + "]"

    lines: list[str] = []
    for diff in case.differences:
        if diff.what == "decision":
            expected, actual = str(diff.expected), str(diff.actual)
        elif diff.what == "rules_fired":
            expected, actual = listed(diff.expected), listed(diff.actual)
        elif diff.what == "actions":
            expected = "; ".join(format_action(a) for a in diff.missing) + " (missing)"
            actual = "; ".join(format_action(a) for a in diff.actual) or "(no actions)"
        else:
            expected = listed(diff.missing) + " (missing)"
            actual = listed(diff.actual)
        lines += [
            f"    {diff.what}:",
            f"      - expected: {expected}",
            f"      + actual:   {actual}",
        ]
    shown = {d.what for d in case.differences}
    result = case.result
    if "decision" not in shown:
        lines.append(f"    decision: {result.decision}")
    if "rules_fired" not in shown:
        lines.append(f"    rules_fired: {listed(result.rules_fired)}")
    lines.append(f"    reasons: {' | '.join(result.reasons)}")
    for line in lines:
        console.print(escape(line), highlight=False, soft_wrap=True)


def _when(value: str, option: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(
            f"{option} {value!r} is not an ISO date/time — write e.g. 2026-03-01 or "
            "2026-03-01T12:00:00Z"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@rules_app.command("backtest")
def rules_backtest(
    since: Annotated[
        str, typer.Option(help="Replay events from this ISO date/time (UTC if no offset).")
    ],
    until: Annotated[
        str | None, typer.Option(help="Up to (not including) this ISO date/time.")
    ] = None,
    rules: Annotated[
        Path | None, typer.Option("--rules", help="Candidate rule folder (ARBITER_RULES_DIR).")
    ] = None,
    samples: Annotated[int, typer.Option(min=0, help="Sample events per change.")] = 3,
    event_type: Annotated[str | None, typer.Option("--type", help="Only this event type.")] = None,
) -> None:
    """Replay stored events through candidate rules and show how decisions would change.

    Reads the ledger only: it writes nothing and publishes nothing.
    """
    from app.ops.backtest import BacktestRequest, run_backtest
    from app.rules.loader import check_rules
    from app.wiring import rule_vocabulary

    settings = _settings(rules_dir=rules)
    start, end = _when(since, "--since"), (_when(until, "--until") if until else None)
    if event_type is not None and event_type not in settings.event_types:
        raise _fail(f"--type {event_type!r} is not one of {', '.join(settings.event_types)}")
    rulesets, problems = check_rules(settings.rules.dir, *rule_vocabulary(settings))
    if problems:
        for problem in problems:
            err.print("[red]✗[/]", escape(str(problem)), highlight=False, soft_wrap=True)
        raise _fail(
            f"the candidate rules in {settings.rules.dir} have {len(problems)} problem(s) "
            "(listed above) — fix them, then backtest"
        )
    request = BacktestRequest(
        database_url=settings.resolved_database_url,
        since=start,
        until=end,
        event_types=(event_type,) if event_type else None,
        samples=samples,
    )
    with console.status("replaying the ledger…") as status:
        report = _run(
            lambda: run_backtest(
                request,
                rulesets,
                on_progress=lambda n: status.update(f"replaying the ledger… {n:,} events"),
            )
        )
    _print_backtest(report)


def _print_backtest(report: Any) -> None:
    from rich.table import Table

    from app.rules.authoring.backtest import BacktestReport

    assert isinstance(report, BacktestReport)
    window = f"since {report.since.isoformat() if report.since else '?'}"
    if report.until is not None:
        window += f" until {report.until.isoformat()}"
    console.print(
        f"backtest {window}: {report.events:,} events replayed, {report.changed:,} decisions "
        f"would change ({report.seeded:,} earlier events seeded the windows)",
        highlight=False,
    )
    for part in report.by_type:
        table = Table(title=f"{part.event_type}: {part.events:,} events, {part.changed:,} changed")
        table.add_column("old decision")
        table.add_column("new decision")
        table.add_column("events", justify="right")
        for (old, new), count in part.transitions.items():
            style = None if old == new else "bold yellow"
            table.add_row(escape(old), escape(new), f"{count:,}", style=style)
        console.print(table)
        if part.rule_shifts:
            shifts = Table(title=f"{part.event_type}: rules that fired more / less")
            shifts.add_column("rule")
            shifts.add_column("before", justify="right")
            shifts.add_column("candidate", justify="right")
            shifts.add_column("change", justify="right")
            for shift in part.rule_shifts:
                shifts.add_row(
                    escape(shift.rule), f"{shift.old:,}", f"{shift.new:,}", f"{shift.delta:+,}"
                )
            console.print(shifts)
        for (old, new), found in part.samples.items():
            console.print(escape(f"  {old} → {new}, e.g.:"), highlight=False)
            for sample in found:
                was = ", ".join(sample.old_rules_fired) or "default"
                now = ", ".join(sample.new_rules_fired) or "default"
                reasons = " | ".join(sample.new_reasons)
                console.print(
                    escape(f"    {sample.event_id} (was {was}; now {now}): {reasons}"),
                    highlight=False,
                    soft_wrap=True,
                )
    if report.outcomes is None:
        console.print("outcome effect: no outcomes recorded yet")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (Alembic) to ARBITER_DATABASE_URL (default: SQLite)."""
    from app.store import migrate
    from app.store.db import check_connection, create_engine

    settings = _settings()
    url = settings.resolved_database_url

    async def upgrade() -> str | None:
        if url.startswith("sqlite"):
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        try:
            await check_connection(engine, url)
            await migrate.upgrade(url)
            return await migrate.current_revision(engine)
        finally:
            await engine.dispose()

    revision = _run(upgrade)
    console.print(f"database is at revision {revision}")


@schemas_app.command("export")
def schemas_export(
    directory: Annotated[Path, typer.Argument(help="Where to write *.schema.json.")],
) -> None:
    """Write the JSON Schema of every event, outcome and decision type, and the AsyncAPI
    document of the Kafka topics (asyncapi.json, generated by FastStream)."""
    import json

    from connectors.http.asyncapi import asyncapi_document
    from schemas.export import write_json_schemas

    settings = _settings()
    for path in write_json_schemas(directory):
        console.print(f"wrote {path}")
    path = directory / "asyncapi.json"
    document = asyncapi_document(settings)
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    console.print(f"wrote {path}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
