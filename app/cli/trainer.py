"""``arbiter train NAME`` and ``arbiter trainer``: training by hand and on its own.

``train`` runs one training run in this process with a progress bar and prints the
verdict; ``trainer`` is the background trainer as a process of its own (beside consumers
started with ``ARBITER_TRAINER_ENABLED=false``), until SIGTERM/SIGINT: then the run in
progress is stopped (closed ``abandoned``, the lease released for the next trainer at
once) and the process exits 0 — or 3 when that overran ``ARBITER_SHUTDOWN_GRACE_S``.
"""

from __future__ import annotations

import asyncio
import signal
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
            help="A model (transaction.fraud, order.risk) or 'ticket' for the three heads."
        ),
    ],
    budget: Annotated[
        float | None, typer.Option(help="Seconds for the hyper-parameter search per model.")
    ] = None,
) -> None:
    """Train NAME now from the logged outcomes; promote the result only if it is better."""
    settings = build_settings(trainer_budget_s=budget)
    from app.store.migrate import open_migrated
    from app.trainer.jobs.run import target_of
    from app.trainer.service import Trainer

    try:
        target = name if name == "ticket" else target_of(name)
    except ValueError as exc:
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
    from app.processes.shutdown import EXIT_GRACE_OVERRUN, Shutdown
    from app.store.migrate import open_migrated
    from app.trainer.service import Trainer

    log = structlog.get_logger("arbiter.trainer")

    async def go() -> Shutdown:
        async with open_migrated(settings.resolved_database_url) as engine:
            stop = asyncio.Event()
            work = asyncio.create_task(
                Trainer(settings, engine).run_forever(stop), name="arbiter-trainer"
            )

            def on_begin() -> None:
                # A run in progress is cut short, not waited for (it can take minutes):
                # its child is terminated, the run closed "abandoned", the lease released.
                stop.set()
                work.cancel()

            shutdown = Shutdown(settings.shutdown_grace_s, on_begin)
            work.add_done_callback(lambda _: shutdown.begin())
            loop = asyncio.get_running_loop()

            def on_signal(sig: signal.Signals) -> None:
                if not shutdown.begun.is_set():
                    log.info("shutdown requested; stopping the trainer", signal=sig.name)
                shutdown.begin()

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal, sig)
            await shutdown.begun.wait()
            await shutdown.finish([work])
            failed = work.exception() if work.done() and not work.cancelled() else None
            if failed is not None:
                raise failed
            shutdown.waiting_on = "teardown (database pool)"
        return shutdown

    shutdown = run_async(go)
    if shutdown.overran:
        log.error(
            "trainer stopped after the shutdown grace period",
            cut_off=shutdown.cut_off,
            status=EXIT_GRACE_OVERRUN,
        )
        raise typer.Exit(EXIT_GRACE_OVERRUN)
    shutdown.disarm()
    console.print("trainer stopped")
