"""``arbiter trainer``: the background trainer as a process of its own.

It runs beside consumers started with ``ARBITER_TRAINER_ENABLED=false`` and trains when
outcomes, a schedule or drift say so, until SIGTERM/SIGINT. Then the run in progress is
cut short, not waited for (it can take minutes): its child is terminated, the run closed
``abandoned`` and the lease released for the next trainer at once. The stop is bounded by
``ARBITER_SHUTDOWN_GRACE_S`` like ``arbiter run``'s (``app.processes.shutdown``).
"""

from __future__ import annotations

import asyncio
import signal

import structlog

from app.processes.shutdown import Shutdown
from app.settings import Settings
from app.store.migrate import open_migrated
from app.trainer.service import Trainer

log = structlog.get_logger("arbiter.trainer")


async def run_trainer(settings: Settings) -> Shutdown:
    """Train until a signal; the finished shutdown (``overran`` when something had to be
    cut off at the grace). A trainer that fails on its own raises its error."""
    async with open_migrated(settings.resolved_database_url) as engine:
        stop = asyncio.Event()
        work = asyncio.create_task(
            Trainer(settings, engine).run_forever(stop), name="arbiter-trainer"
        )

        def on_begin() -> None:
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
