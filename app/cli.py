"""The ``arbiter`` command line: each command builds settings and calls one service function.

Start-up problems (``ConfigError``) print one line naming the thing and the fix and
exit with status 2; nothing prints a traceback at a user for a configuration mistake.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

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
    configure_logging(settings.log_format, settings.log_level)
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
    from app.runner import run_service

    _run(lambda: run_service(settings))


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="How many events the simulator sends.")] = 3000,
    rate: Annotated[float, typer.Option(help="Events per second; 0 = as fast as possible.")] = 500,
    seed: Annotated[int, typer.Option(help="Simulator seed (same seed, same events).")] = 7,
) -> None:
    """Run everything on embedded defaults: broker, SQLite, models, rules, simulator."""
    settings = _settings(log_level="warning", kafka_bootstrap=None)
    from app.demo import run_demo

    if settings.kafka_bootstrap:
        settings = settings.model_copy(update={"kafka_bootstrap": None})
    _run(lambda: run_demo(settings, events=events, rate=rate, seed=seed, console=console))


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
    rate: Annotated[float, typer.Option(help="Events per second; 0 = as fast as possible.")] = 0,
    seed: Annotated[int, typer.Option(help="Same seed, same events.")] = 7,
    malformed_rate: Annotated[float, typer.Option(help="Share of deliberately bad events.")] = 0.02,
    topic_prefix: Annotated[str, typer.Option(help="Prefix of the topic names.")] = "",
) -> None:
    """Send a realistic, seeded mix of orders, tickets and transactions to any Kafka."""
    from app.simulator.emit import emit
    from app.simulator.generate import generate

    settings = _settings(topic_prefix=topic_prefix)
    sent = _run(
        lambda: emit(
            bootstrap,
            generate(events, seed=seed, malformed_rate=malformed_rate),
            topic_for=lambda t: settings.topic("events", t),
            rate=rate,
        )
    )
    console.print(f"sent {sent:,} events to {bootstrap}")


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
    rulesets, problems = check_rules(settings.rules_dir, types, scores)
    for problem in problems:
        err.print("[red]✗[/]", escape(str(problem)), highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    for name, ruleset in sorted(rulesets.items()):
        console.print(
            f"[green]✓[/] {name}: {len(ruleset.rules)} rules, default "
            f"'{ruleset.default_decision}', version {ruleset.version}"
        )


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
    """Write the JSON Schema of every event, outcome and decision type."""
    from schemas.export import write_json_schemas

    for path in write_json_schemas(directory):
        console.print(f"wrote {path}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
