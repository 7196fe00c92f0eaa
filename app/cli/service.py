"""``arbiter run``, ``demo``, ``broker`` and ``simulate``: the long-running processes.

``run`` is the consumer (``app.processes.run``), ``demo`` everything on embedded
defaults (``app.processes.demo``), ``broker`` the embedded Kafka-compatible broker,
``simulate`` the event simulator sending to any Kafka (``app.processes.simulate``).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from app.cli.options import build_settings, console, fail, run_async
from app.errors import ConfigError


def run() -> None:
    """Consume events.<type>, decide, publish decisions.<type>; stop cleanly on SIGTERM/SIGINT."""
    settings = build_settings()
    from app.processes.run import run_service

    run_async(lambda: run_service(settings))


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
    settings = build_settings(log_level="error", kafka_bootstrap=None)
    from app.processes.demo import run_demo

    if settings.kafka.bootstrap:
        settings = settings.replace(kafka_bootstrap=None)
    run_async(
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
        fail(str(exc))
    except KeyboardInterrupt:
        console.print("broker stopped")


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

    settings = build_settings(topic_prefix=topic_prefix)
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
        fail(str(exc))
    events_sent = 0  # emit's on_sent counts events, its return value every message

    def on_sent(n: int) -> None:
        nonlocal events_sent
        events_sent += n

    sent = run_async(
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
