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

import sqlalchemy as sa
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from app.errors import ConfigError
from app.pipeline.processor import BatchResult
from app.service import Components, ConsumeLoop, start_components
from app.settings import Settings
from app.simulator.emit import emit
from app.simulator.generate import generate
from app.store import tables
from app.store.ledger import percentiles
from app.store.training import TrainingRun, TrainingStore


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
    settings = _demo_settings(settings)
    console.print(
        f"[bold]Arbiter demo[/] — the live dashboard will be at "
        f"http://127.0.0.1:{settings.http_port or 'PORT'}/ once the service is up"
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
            stop_http = asyncio.Event()
            http_task = await _start_dashboard(c, settings, stop_http, console)
            try:
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
                story = await _story(c)
            finally:
                stop_http.set()
                if http_task is not None:
                    await http_task
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
    console.print()
    console.print(_summary(stats, latency))
    console.print(_story_tables(story))
    if interrupted.is_set():
        console.print("[yellow]stopped early by Ctrl-C; the broker has been shut down.[/]")
    return stats


@dataclass
class Story:
    """What the run did beyond counts: the rules that fired most and the trainer's view."""

    top_rules: list[tuple[str, str, int]]  # (event type, rule, hits)
    outcomes: int
    runs: list[TrainingRun]
    min_new: int


async def _start_dashboard(
    c: Components, settings: Settings, stop: asyncio.Event, console: Console
) -> asyncio.Task[None] | None:
    """Serve the API and dashboard for the run; a taken port falls back to a free one."""
    from app.api.app import build_api
    from app.api.serve import serve_http
    from app.store.keys import KeyStore

    api = build_api(c, KeyStore(c.ledger.engine, cache_s=settings.api_key_cache_s), settings)
    for port in dict.fromkeys((settings.http_port, 0)):
        ready = asyncio.Event()
        bound: list[int] = []

        def on_ready(p: int, bound: list[int] = bound, ready: asyncio.Event = ready) -> None:
            bound.append(p)
            ready.set()

        task = asyncio.create_task(
            serve_http(api, settings.http_host, port, stop=stop, on_ready=on_ready)
        )
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if bound:
            console.print(f"• dashboard: http://{settings.http_host}:{bound[0]}/")
            return task
        with contextlib.suppress(ConfigError):
            task.result()
    console.print("• dashboard: not available (no free port)")
    return None


async def _story(c: Components) -> Story:
    decisions = tables.decisions
    async with c.ledger.engine.connect() as conn:
        rows = (
            await conn.execute(sa.select(decisions.c.event_type, decisions.c.rules_fired))
        ).all()
        outcomes = int(
            (
                await conn.execute(sa.select(sa.func.count()).select_from(tables.outcomes))
            ).scalar_one()
        )
    hits: Counter[tuple[str, str]] = Counter()
    for event_type, fired in rows:
        for rule in fired or []:
            hits[(event_type, str(rule))] += 1
    top = [(t, r, n) for (t, r), n in hits.most_common(5)]
    runs = await TrainingStore(c.ledger.engine).runs(limit=10)
    return Story(top, outcomes, runs, c.settings.trainer_min_new)


def _story_tables(story: Story) -> Group:
    rules = Table(title="Rules that fired most")
    rules.add_column("event type")
    rules.add_column("rule")
    rules.add_column("hits", justify="right")
    for event_type, rule, n in story.top_rules:
        rules.add_row(event_type, rule, f"{n:,}")
    trainer = Table(title="Trainer")
    trainer.add_column("model")
    trainer.add_column("trigger")
    trainer.add_column("result")
    trainer.add_column("ROC-AUC / macro-F1 champion → challenger")
    for run in story.runs:
        metric = "roc_auc" if "roc_auc" in run.challenger_metrics else "macro_f1"
        before = run.champion_metrics.get(metric)
        after = run.challenger_metrics.get(metric)
        change = f"{before:.3f} → {after:.3f}" if before is not None and after is not None else "—"
        trainer.add_row(run.model, run.trigger, run.status, change)
    if not story.runs:
        trainer.add_row(
            "—",
            "—",
            f"no retrain yet: {story.outcomes:,} outcomes stored; a model retrains after "
            f"{story.min_new:,} new labelled ones (ARBITER_TRAINER_MIN_NEW), or `arbiter train`",
            "—",
        )
    return Group(rules, trainer)


def _demo_settings(settings: Settings) -> Settings:
    """The demo's own data folder with a fresh ledger; the API open (no key) on loopback,
    for the dashboard."""
    demo_dir = settings.data_dir / "demo"
    _fresh_ledger(demo_dir)
    return settings.model_copy(
        update={
            "data_dir": demo_dir,
            "auto_migrate": True,
            "database_url": None,
            "api_auth": False,
            "http_host": "127.0.0.1",
        }
    )


def _fresh_ledger(demo_dir: Path) -> None:
    """Each demo run starts with an empty ledger (the seeded simulator reuses event ids)."""
    demo_dir.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        (demo_dir / f"arbiter.db{suffix}").unlink(missing_ok=True)
