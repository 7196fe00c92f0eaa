"""``arbiter demo``: the whole system on a laptop, with a live view and a summary.

Starts the embedded broker and a fresh SQLite ledger under ``<data_dir>/demo``, trains
the first models if none exist yet, starts the consumer, and drives the simulator (a
realistic mix of orders, tickets and transactions, a few of them malformed). Stops when
every event has come out as a decision or a dead letter, after ``--events``, or on
Ctrl-C — the broker is stopped either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from app.pipeline.processor import BatchResult
from app.service import ConsumeLoop, start_components
from app.settings import Settings
from app.simulator.emit import emit
from app.simulator.generate import generate
from app.store.ledger import percentiles


@dataclass
class DemoStats:
    sent: int = 0
    decided: Counter[tuple[str, str]] = field(default_factory=Counter)
    dead: Counter[tuple[str, str]] = field(default_factory=Counter)
    e2e_ms: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def on_batch(self, result: BatchResult) -> None:
        self.decided.update(result.decided)
        self.dead.update(result.dead_lettered)
        self.e2e_ms.extend(result.e2e_ms)

    @property
    def done(self) -> int:
        return sum(self.decided.values()) + sum(self.dead.values())


def _live_view(stats: DemoStats, total: int) -> Panel:
    elapsed = max(time.monotonic() - stats.started, 1e-6)
    table = Table.grid(padding=(0, 3))
    table.add_row("events sent", f"{stats.sent:,} / {total:,}")
    table.add_row("decisions out", f"{sum(stats.decided.values()):,}")
    table.add_row("dead letters", f"{sum(stats.dead.values()):,}")
    table.add_row("events/s", f"{stats.done / elapsed:,.0f}")
    return Panel(table, title="Arbiter demo — Ctrl-C to stop", expand=False)


def _summary(stats: DemoStats, ledger_latency: dict[float, float]) -> Group:
    decisions = Table(title="Decisions by type")
    decisions.add_column("event type")
    decisions.add_column("decision")
    decisions.add_column("count", justify="right")
    for (event_type, decision), n in sorted(stats.decided.items()):
        decisions.add_row(event_type, decision, f"{n:,}")
    dead = Table(title="Dead letters by reason")
    dead.add_column("event type")
    dead.add_column("reason")
    dead.add_column("count", justify="right")
    for (event_type, reason), n in sorted(stats.dead.items()):
        dead.add_row(event_type, reason, f"{n:,}")
    e2e = percentiles(stats.e2e_ms, (0.5, 0.99)) if stats.e2e_ms else {0.5: 0.0, 0.99: 0.0}
    latency = Table(title="Latency (ms)")
    latency.add_column("measure")
    latency.add_column("p50", justify="right")
    latency.add_column("p99", justify="right")
    latency.add_row(
        "decide (batch received → decided)",
        f"{ledger_latency.get(0.5, 0.0):.1f}",
        f"{ledger_latency.get(0.99, 0.0):.1f}",
    )
    latency.add_row("end to end (produced → stored)", f"{e2e[0.5]:.1f}", f"{e2e[0.99]:.1f}")
    return Group(decisions, dead, latency)


async def run_demo(
    settings: Settings, *, events: int, rate: float, seed: int, console: Console
) -> DemoStats:
    demo_dir = settings.data_dir / "demo"
    _fresh_ledger(demo_dir)
    settings = settings.model_copy(
        update={"data_dir": demo_dir, "auto_migrate": True, "database_url": None}
    )
    stats = DemoStats()
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    loop.add_signal_handler(signal.SIGTERM, interrupted.set)
    try:
        async with start_components(settings, on_progress=lambda m: console.print(f"• {m}")) as c:
            consume = ConsumeLoop(c, listeners=[stats.on_batch])
            consumer_task = asyncio.create_task(consume.run())
            await asyncio.wait_for(consume.ready.wait(), 30)
            console.print(f"• simulator sending {events:,} events (rate {rate or 'max'}/s)")
            stats.started = time.monotonic()

            def sent(n: int) -> None:
                stats.sent += n

            producer_task = asyncio.create_task(
                emit(
                    c.bootstrap,
                    generate(events, seed=seed, malformed_rate=0.02, outcomes=True),
                    topic_for=lambda t: settings.topic("events", t),
                    outcome_topic_for=lambda t: settings.topic("outcomes", t),
                    rate=rate,
                    on_sent=sent,
                    stop=interrupted,
                )
            )
            with Live(_live_view(stats, events), console=console, refresh_per_second=4) as live:
                while not interrupted.is_set():
                    live.update(_live_view(stats, events))
                    if producer_task.done() and stats.done >= stats.sent:
                        break
                    if consumer_task.done():
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(interrupted.wait(), 0.25)
                live.update(_live_view(stats, events))
            consume.stop()
            await producer_task
            await consumer_task
            latency = await c.ledger.latency_percentiles((0.5, 0.99))
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
    console.print()
    console.print(_summary(stats, latency))
    if interrupted.is_set():
        console.print("[yellow]stopped early by Ctrl-C; the broker has been shut down.[/]")
    return stats


def _fresh_ledger(demo_dir: Path) -> None:
    """Each demo run starts with an empty ledger (the seeded simulator reuses event ids)."""
    demo_dir.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        (demo_dir / f"arbiter.db{suffix}").unlink(missing_ok=True)
