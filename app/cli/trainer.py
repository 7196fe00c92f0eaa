"""``arbiter train NAME`` and ``arbiter trainer``: training by hand and on its own.

``train`` runs one training run in this process with a progress bar and prints the
verdict; ``trainer`` runs the background trainer as a process of its own
(``app.processes.trainer``) and exits 0 — or 3 when its stop overran
``ARBITER_SHUTDOWN_GRACE_S``.
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.cli.options import build_settings, console, fail, run_async


def train(
    name: Annotated[
        str,
        typer.Argument(
            help="A tabular model (transaction.fraud, loan.default_risk, ...) or an event type "
            "for its text models together (ticket)."
        ),
    ],
    budget: Annotated[
        float | None, typer.Option(help="Seconds for the hyper-parameter search per model.")
    ] = None,
) -> None:
    """Train NAME now from the logged outcomes; promote the result only if it is better."""
    settings = build_settings(trainer_budget_s=budget)
    from app.declarations import served_by
    from app.errors import ConfigError
    from app.store.migrate import open_migrated
    from app.trainer.jobs.run import models_of, target_of
    from app.trainer.service import Trainer

    try:
        catalog = served_by(settings).catalog()
        target = target_of(name, catalog) if name in catalog else name
        models_of(target, catalog)  # refuses an unknown name, listing the known ones
    except (ValueError, ConfigError) as exc:
        fail(str(exc))

    async def go() -> list[Any]:
        async with open_migrated(settings.resolved_database_url) as engine:
            trainer = Trainer(settings, engine)
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            ) as progress:
                task = progress.add_task(f"training {target}", total=None)

                def step(message: str) -> None:
                    progress.update(task, description=escape(message))
                    progress.console.print(f"  · {escape(message)}", highlight=False)

                try:
                    return await trainer.train(target, "manual", in_process=True, on_progress=step)
                except RuntimeError as exc:
                    fail(str(exc))

    outcomes = run_async(go)
    table = Table(title="training run", title_justify="left")
    for column in ("model", "run", "result", "version", "reason"):
        table.add_column(column)
    for o in outcomes:
        table.add_row(
            o.model, str(o.run_id), o.status, f"v{o.version}" if o.version else "", escape(o.reason)
        )
    console.print(table)
    for o in outcomes:
        if o.report:  # on a line of its own: a path must not be wrapped in a table cell
            console.print(f"{o.model} report: {escape(o.report)}", soft_wrap=True, highlight=False)
    if any(o.status == "failed" for o in outcomes):
        raise typer.Exit(1)


def trainer() -> None:
    """The background trainer on its own: trains when outcomes, a schedule or drift say so."""
    settings = build_settings()
    from app.processes.shutdown import EXIT_GRACE_OVERRUN
    from app.processes.trainer import run_trainer

    shutdown = run_async(lambda: run_trainer(settings))
    if shutdown.overran:
        structlog.get_logger("arbiter.trainer").error(
            "trainer stopped after the shutdown grace period",
            cut_off=shutdown.cut_off,
            status=EXIT_GRACE_OVERRUN,
        )
        raise typer.Exit(EXIT_GRACE_OVERRUN)
    shutdown.disarm()
    console.print("trainer stopped")
