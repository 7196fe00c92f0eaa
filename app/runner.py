"""``arbiter run``: the production entry point — consume until SIGTERM/SIGINT, then drain.

Beside the consume loop the process runs: the HTTP API (``ARBITER_HTTP_ENABLED``), the
webhook relay (``ARBITER_WEBHOOKS_ENABLED``, when the connectors file has an active
endpoint), the background trainer (``ARBITER_TRAINER_ENABLED``) and the sweeper that
publishes stored decisions a crash or a failed publish left unpublished
(``app/outbox/republish.py``).

On the first signal /readyz turns 503 (load balancers drain), the loop finishes the
batch in hand, commits its offsets and leaves the consumer group; then the HTTP server
finishes its requests, the relay hands back the deliveries it holds, and the process
exits 0 with its partitions already moved to the other members.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any

import structlog

from app.outbox.republish import PublishSweeper
from app.service import BatchListener, Components, ConsumeLoop, start_components
from app.settings import Settings
from app.trainer.service import Trainer

log = structlog.get_logger("arbiter.run")


async def run_service(settings: Settings, *, listeners: tuple[BatchListener, ...] = ()) -> None:
    async with start_components(settings) as components, contextlib.AsyncExitStack() as side:
        loop = ConsumeLoop(components, listeners=listeners)
        engine = components.ledger.engine
        stops: list[asyncio.Event] = []
        tasks: list[asyncio.Task[None]] = []
        drain: Callable[[], None] = lambda: None  # noqa: E731 (replaced when HTTP runs)

        def background(name: str, start: Callable[[asyncio.Event], Any]) -> None:
            stop = asyncio.Event()
            stops.append(stop)
            task = asyncio.create_task(start(stop), name=name)
            # A side task that dies on its own (the HTTP port is taken, say) stops the
            # service: it must not keep consuming half-configured.
            task.add_done_callback(lambda t: None if t.cancelled() else loop.stop())
            tasks.append(task)

        if settings.http_enabled:
            from app.api.app import build_api
            from app.api.serve import serve_http
            from app.store.keys import KeyStore

            api = build_api(
                components,
                KeyStore(engine, cache_s=settings.api_key_cache_s),
                settings,
                deliveries=_deliveries_of(components),
            )

            def drain() -> None:
                api.state.api.readiness.draining = True

            background(
                "arbiter-http",
                lambda stop: serve_http(
                    api,
                    settings.http_host,
                    settings.http_port,
                    stop=stop,
                    on_ready=lambda port: log.info(
                        "http api listening", host=settings.http_host, port=port
                    ),
                ),
            )
        if settings.webhooks_enabled and components.endpoints.active:
            import httpx

            from app.outbox.relay import Relay, RelayPolicy

            client = httpx.AsyncClient()
            side.push_async_callback(client.aclose)
            relay = Relay(
                engine, components.endpoints, client, policy=RelayPolicy.from_settings(settings)
            )
            background("arbiter-relay", relay.run_forever)
        if settings.trainer_enabled:
            background("arbiter-trainer", Trainer(settings, engine).run_forever)
        sweeper = PublishSweeper(
            components.ledger, components.processor.decision_messages, components.publish
        )
        background("arbiter-republish", sweeper.run_forever)

        running = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            running.add_signal_handler(sig, _stopper(loop, sig, drain))
        log.info(
            "consuming",
            bootstrap=components.bootstrap,
            types=list(settings.event_types),
            group=settings.consumer_group,
        )
        try:
            await loop.run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                running.remove_signal_handler(sig)
            await _stop_all(stops, tasks)
        log.info("stopped cleanly", batches=loop.batches)


async def _stop_all(stops: list[asyncio.Event], tasks: list[asyncio.Task[None]]) -> None:
    """Ask every side task to stop, then wait; the trainer's run in progress is cancelled
    (its child is terminated, nothing registered: the next trainer closes the run
    "abandoned")."""
    for stop in stops:
        stop.set()
    for task in tasks:
        if task.get_name() == "arbiter-trainer":
            task.cancel()
    failure: BaseException | None = None
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            try:
                await asyncio.wait_for(task, 30)
            except TimeoutError:
                log.warning("a background task did not stop in 30 s", task=task.get_name())
            except Exception as exc:  # stop the rest first, then report it
                log.error("a background task failed", task=task.get_name(), error=str(exc))
                failure = failure or exc
    if failure is not None:
        raise failure


def _deliveries_of(components: Components) -> Callable[[str], Any]:
    """``GET /v1/decisions/{id}``'s deliveries: the outbox rows of that event."""
    from app.store.outbox import OutboxStore

    store = OutboxStore(components.ledger.engine)

    async def deliveries(event_id: str) -> list[dict[str, Any]]:
        return [
            {
                "id": d.id,
                "endpoint": d.endpoint,
                "status": d.status,
                "attempts": d.attempts,
                "last_status": d.last_status,
                "last_error": d.last_error,
                "next_attempt_at": d.next_attempt_at.isoformat(),
                "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
            }
            for d in await store.recent(event_id=event_id)
        ]

    return deliveries


def _stopper(
    loop: ConsumeLoop, sig: signal.Signals, drain: Callable[[], None]
) -> Callable[[], None]:
    def handler() -> None:
        log.info("shutdown requested; finishing the batch in hand", signal=sig.name)
        drain()  # /readyz answers 503 from now on
        loop.stop()

    return handler
