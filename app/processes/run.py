"""``arbiter run``: the production entry point — consume until SIGTERM/SIGINT, then drain.

Beside the consume loop the process runs: the HTTP API (``ARBITER_HTTP_ENABLED``), the
webhook relay (``ARBITER_WEBHOOKS_ENABLED``, when the connectors file has an active
endpoint), the background trainer (``ARBITER_TRAINER_ENABLED``) and the sweeper that
publishes stored decisions a crash or a failed publish left unpublished
(``app/pipeline/republish.py``).

The shutdown is bounded by ``ARBITER_SHUTDOWN_GRACE_S`` (25 s), counted from the first
signal (or from the consume loop or a side task ending on its own):

1. /readyz answers 503 at once, so load balancers stop sending traffic (/healthz stays 200).
2. The consume loop finishes the batch in hand, commits its offsets and leaves the
   consumer group: its partitions move to the other members at once, not after the
   session timeout.
3. The webhook relay, the trainer and the republish sweeper are told to stop, together:
   the relay claims no new round and finishes the deliveries in flight; the trainer's run
   in progress is cancelled (its child terminated, the run closed ``abandoned``, the lease
   released); the sweeper finishes its round.
4. The HTTP API stops last, so that it answers probes through the whole drain; it
   finishes the requests in flight.
5. The components close (producer flushed, database pool closed); exit status 0.

A task still running when its share of the grace is over is cut off (cancelled) and
named in an error log line: a relay cut off mid-round hands its deliveries back unsent
(another relay or the next start sends them at once, not after the lease), a consume
loop cut off mid-batch commits nothing (the batch is redelivered; the ledger keeps it
from being decided twice). The process then exits with status 3 (``EXIT_GRACE_OVERRUN``)
instead of 0. Should even that not end it (a task that ignores cancellation, a teardown
that hangs), a watchdog thread ends the process with status 3, ``FORCE_EXIT_AFTER_S``
after the grace, so it never hangs until the orchestrator's kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from app.processes.shutdown import EXIT_GRACE_OVERRUN, HTTP_MIN_S, Shutdown
from app.settings import Settings
from app.wiring import Components, consume_loop, start_components
from connectors.kafka.consume import BatchListener

log = structlog.get_logger("arbiter.run")


Side = list[tuple[asyncio.Event, asyncio.Task[None]]]  # (stop, task) per side task


async def run_service(settings: Settings, *, listeners: tuple[BatchListener, ...] = ()) -> None:
    """Run until SIGTERM/SIGINT, then shut down as the module docstring says; an overrun
    raises ``SystemExit(EXIT_GRACE_OVERRUN)`` (this is the process's main)."""
    begin_steps: list[Callable[[], None]] = []  # readiness first, then the consume loop

    def on_begin() -> None:
        for step in begin_steps:
            step()

    shutdown = Shutdown(settings.shutdown_grace_s, on_begin)
    try:
        async with start_components(settings) as components, contextlib.AsyncExitStack() as side:
            failure = await _serve(settings, components, side, shutdown, begin_steps, listeners)
            shutdown.waiting_on = "teardown (producer flush, database pool, broker)"
    finally:
        shutdown.disarm()  # unless something overran: then it guards the last steps
    if failure is not None:
        raise failure
    if shutdown.overran:
        raise SystemExit(EXIT_GRACE_OVERRUN)


async def _serve(
    settings: Settings,
    components: Components,
    side: contextlib.AsyncExitStack,
    shutdown: Shutdown,
    begin_steps: list[Callable[[], None]],
    listeners: tuple[BatchListener, ...],
) -> BaseException | None:
    """Consume and run the side tasks until the shutdown begins, then drain; the first
    failure of a task, if one failed on its own."""
    loop = consume_loop(components, listeners=listeners)
    workers, http = _start_side_tasks(settings, components, side, shutdown, begin_steps)
    begin_steps.append(loop.stop)  # after /readyz: the batch in hand, commit, leave
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, _stopper(shutdown, sig))
    consumer = asyncio.create_task(loop.run(), name="arbiter-consumer")
    consumer.add_done_callback(lambda _: shutdown.begin())  # crashed: stop the rest
    log.info(
        "consuming",
        bootstrap=components.bootstrap,
        types=list(settings.event_types),
        group=settings.kafka.consumer_group,
        shutdown_grace_s=settings.shutdown_grace_s,
    )
    tasks = [consumer, *(t for _, t in workers), *(t for _, t in http)]
    try:
        await shutdown.begun.wait()
        await _drain(shutdown, consumer, workers, http, batches=lambda: loop.batches)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            running.remove_signal_handler(sig)
        for task in tasks:  # only when run_service itself was interrupted
            task.cancel()
    failure = _failure(tasks)
    if failure is None and shutdown.overran:
        log.error(
            "stopped after the shutdown grace period",
            cut_off=shutdown.cut_off,
            grace_s=settings.shutdown_grace_s,
            status=EXIT_GRACE_OVERRUN,
            batches=loop.batches,
        )
    elif failure is None:
        log.info("stopped cleanly", batches=loop.batches)
    return failure


def _start_side_tasks(
    settings: Settings,
    components: Components,
    side: contextlib.AsyncExitStack,
    shutdown: Shutdown,
    begin_steps: list[Callable[[], None]],
) -> tuple[Side, Side]:
    """Start the HTTP API, the relay, the trainer and the sweeper (as configured): the
    workers, and the HTTP API apart (it stops last)."""
    from app.pipeline.republish import PublishSweeper
    from app.trainer.service import Trainer

    engine = components.ledger.engine
    workers: Side = []
    http: Side = []

    def background(name: str, start: Callable[[asyncio.Event], Any], into: Side) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(start(stop), name=name)
        # A side task that dies on its own (the HTTP port is taken, say) stops the
        # service: it must not keep consuming half-configured.
        task.add_done_callback(lambda t: None if t.cancelled() else shutdown.begin())
        into.append((stop, task))

    if settings.http.enabled:
        from app.store.keys import KeyStore
        from connectors.http.app import build_api
        from connectors.http.serve import serve_http

        api = build_api(
            components,
            KeyStore(engine, cache_s=settings.http.key_cache_s),
            settings,
            deliveries=_deliveries_of(components),
        )

        def drain() -> None:
            api.state.api.readiness.draining = True

        begin_steps.append(drain)  # /readyz answers 503 from the shutdown's first moment
        background(
            "arbiter-http",
            lambda stop: serve_http(
                api,
                settings.http.host,
                settings.http.port,
                stop=stop,
                on_ready=lambda port: log.info(
                    "http api listening", host=settings.http.host, port=port
                ),
            ),
            http,
        )
    if settings.webhooks.enabled and components.endpoints.active:
        import httpx

        from connectors.webhooks.relay import Relay, RelayPolicy

        client = httpx.AsyncClient()
        side.push_async_callback(client.aclose)
        relay = Relay(
            engine, components.endpoints, client, policy=RelayPolicy.from_settings(settings)
        )
        background("arbiter-relay", relay.run_forever, workers)
    if settings.trainer.enabled:
        background("arbiter-trainer", Trainer(settings, engine).run_forever, workers)
    sweeper = PublishSweeper(
        components.ledger, components.processor.decision_messages, components.publish
    )
    background("arbiter-republish", sweeper.run_forever, workers)
    return workers, http


async def _drain(
    shutdown: Shutdown,
    consumer: asyncio.Task[None],
    workers: Side,
    http: Side,
    *,
    batches: Callable[[], int],
) -> None:
    """Steps 2 to 4 of the module docstring, each within its share of the grace."""
    await shutdown.finish([consumer])
    if consumer.done() and not consumer.cancelled() and consumer.exception() is None:
        log.info("consumer stopped: batch in hand committed, group left", batches=batches())
    for stop, task in workers:
        stop.set()
        if task.get_name() == "arbiter-trainer":
            task.cancel()  # a run in progress is dropped, not waited for (minutes)
    # The HTTP API keeps the end of the grace for itself: it stops after the others.
    tail = min(2.0, shutdown.grace_s / 5) if http else 0.0
    await shutdown.finish([t for _, t in workers], keep=tail)
    for stop, _ in http:
        stop.set()
    await shutdown.finish([t for _, t in http], at_least=HTTP_MIN_S)


def _failure(tasks: Sequence[asyncio.Task[None]]) -> BaseException | None:
    """The first task that failed on its own (the consume loop first), each failure
    logged; cancelled tasks (cut off, or the trainer) are not failures."""
    first: BaseException | None = None
    for task in tasks:
        if not task.done() or task.cancelled():
            continue
        exc = task.exception()
        if exc is None:
            continue
        if task.get_name() != "arbiter-consumer":
            log.error("a background task failed", task=task.get_name(), error=str(exc))
        first = first or exc
    return first


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


def _stopper(shutdown: Shutdown, sig: signal.Signals) -> Callable[[], None]:
    def handler() -> None:
        if shutdown.begun.is_set():
            log.info("shutdown already in progress", signal=sig.name, left_s=shutdown.left())
            return
        log.info(
            "shutdown requested; /readyz answers 503, finishing the batch in hand",
            signal=sig.name,
            grace_s=shutdown.grace_s,
        )
        shutdown.begin()

    return handler
