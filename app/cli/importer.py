"""``arbiter import TYPE FILE...``: load history (past events with their outcomes) into
the store, marked as imported; the work is ``app.ops.importer`` (docs/import.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from app.cli.options import build_settings, console, fail, parse_when, run_async


def import_history(
    event_type: Annotated[str, typer.Argument(metavar="TYPE", help="The declared event type.")],
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="FILE", help="CSV, Parquet or JSON Lines (.csv .parquet .jsonl .ndjson)."
        ),
    ] = None,
    maps: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            metavar="COLUMN=FIELD",
            help="Read COLUMN as FIELD (dotted for nested: --map kind=device.kind).",
        ),
    ] = None,
    labels: Annotated[
        list[str] | None,
        typer.Option(
            "--label", metavar="COLUMN=LABEL", help="Read COLUMN as the outcome label LABEL."
        ),
    ] = None,
    drops: Annotated[
        list[str] | None, typer.Option("--drop", metavar="COLUMN", help="Leave COLUMN out.")
    ] = None,
    sql: Annotated[
        str | None, typer.Option("--sql", metavar="QUERY", help="Import the rows of QUERY...")
    ] = None,
    sql_url: Annotated[
        str | None,
        typer.Option("--from", metavar="URL", help="...run on this SQLAlchemy URL."),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            metavar="ISO_TIME",
            help="Rows without an event time end at this time, 1 ms apart (default: now).",
        ),
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option(
            "--rejects", metavar="PATH", help="Where refused rows go (default FILE.rejects.jsonl)."
        ),
    ] = None,
) -> None:
    """Import past events of TYPE with their labels into the store, as history (not as
    decisions): the trainer and `rules backtest` use them; re-importing adds nothing."""
    from app.ops.import_rows import MappingError, parse_pairs
    from app.ops.importer import ImportRequest, ImportSummary
    from app.ops.importer import import_history as run_import

    settings = build_settings()
    try:
        request = ImportRequest(
            event_type=event_type,
            files=tuple(files or ()),
            sql=sql,
            sql_url=sql_url,
            maps=parse_pairs(maps or [], "--map"),
            labels=parse_pairs(labels or [], "--label"),
            drops=frozenset(drops or ()),
            at=parse_when(at, "--at") if at is not None else None,
            rejects=rejects,
        )
    except MappingError as exc:
        fail(str(exc))

    async def go() -> ImportSummary:
        with Progress(
            SpinnerColumn(),
            TextColumn("importing {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task(escape(event_type), total=None)

            def step(done: int, total: int | None) -> None:
                # Totals of text files are line counts (estimates): never below what is done.
                progress.update(task, completed=done, total=max(total, done) if total else None)

            summary = await run_import(
                request,
                database_url=settings.resolved_database_url,
                schemas_dir=settings.schemas.dir,
                auto_migrate=settings.database.auto_migrate,
                progress=step,
            )
            progress.update(task, total=summary.rows_read, completed=summary.rows_read)
            return summary

    summary = run_async(go)
    for line in summary.lines():
        console.print(escape(line), highlight=False, soft_wrap=True)
