"""``arbiter run``: the production entry point — consume until SIGTERM/SIGINT, then drain.

On the first signal the loop finishes the batch in hand, commits its offsets, leaves
the consumer group and returns, so the process exits 0 and its partitions move to the
other members at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

import structlog

from app.service import BatchListener, ConsumeLoop, start_components
from app.settings import Settings
from app.trainer.service import Trainer

log = structlog.get_logger("arbiter.run")


async def run_service(settings: Settings, *, listeners: tuple[BatchListener, ...] = ()) -> None:
    async with start_components(settings) as components:
        loop = ConsumeLoop(components, listeners=listeners)
        running = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            running.add_signal_handler(sig, _stopper(loop, sig))
        log.info(
            "consuming",
            bootstrap=components.bootstrap,
            types=list(settings.event_types),
            group=settings.consumer_group,
        )
        stop_training = asyncio.Event()
        training: asyncio.Task[None] | None = None
        if settings.trainer_enabled:
            trainer = Trainer(settings, components.ledger.engine)
            training = asyncio.create_task(trainer.run_forever(stop_training))
        try:
            await loop.run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                running.remove_signal_handler(sig)
            stop_training.set()
            if training is not None:
                # A run in progress is left to finish in its own process; its result is
                # not registered (the run row is closed "abandoned" by the next trainer).
                training.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await training
        log.info("stopped cleanly", batches=loop.batches)


def _stopper(loop: ConsumeLoop, sig: signal.Signals) -> Callable[[], None]:
    def handler() -> None:
        log.info("shutdown requested; finishing the batch in hand", signal=sig.name)
        loop.stop()

    return handler
