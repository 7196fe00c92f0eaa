"""``arbiter demo``: the whole system on a laptop, with a live view and a summary.

Starts the embedded broker and a fresh SQLite ledger under ``<data_dir>/demo``, trains
the first models if none exist yet, starts the consumer and the dashboard, and drives the
simulator (a realistic mix of orders, tickets and transactions, a few of them malformed,
their outcomes later; a third of the way in the fraud pattern changes). When every event
has come out as a decision or a dead letter, the trainer retrains whatever has enough
new outcomes and promotes a version only if it beats the one in service. The summary
tells what happened; on a terminal the dashboard stays up until Ctrl-C. Ctrl-C at any
point stops everything — the broker included.

The demo's models live in ``<data_dir>/demo/models``, rebuilt each run from the first
models (``ARBITER_MODELS_DIR`` or ``<data_dir>/models``, trained there once if missing):
a demo retrain never writes into the models another process serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from app.declarations import served_by
from app.declarations.spec import DeclaredModel
from app.errors import ConfigError
from app.processes.simulate import emit
from app.settings import Settings
from app.simulator.generate import generate
from app.store import tables
from app.store.ledger import percentiles
from app.store.registry import ModelRegistry
from app.store.training import TrainingRun, TrainingStore
from app.trainer.jobs.first import train_missing
from app.trainer.service import RunOutcome, Trainer
from app.values import BatchResult
from app.wiring import Components, consume_loop, start_components

# The demo's own trainer thresholds: a few thousand events bring ~1,500 transaction
# outcomes, fewer than a production ARBITER_TRAINER_MIN_NEW; a short search keeps the
# wait under a minute on a laptop.
DEMO_MIN_NEW = 1000
DEMO_BUDGET_S = 20.0


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
    settings: Settings,
    *,
    events: int,
    rate: float,
    seed: int,
    console: Console,
    retrain: bool = True,
    stay: bool | None = None,
) -> DemoStats:
    """Run the demo; ``stay`` keeps the dashboard up after the summary until Ctrl-C
    (default: when the console is a terminal)."""
    first_models = settings.resolved_models_dir
    settings = _demo_settings(settings)
    console.print(
        f"[bold]Arbiter demo[/] — the live dashboard will be at "
        f"http://127.0.0.1:{settings.http.port or 'PORT'}/ once the service is up"
    )
    stats = DemoStats()
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    loop.add_signal_handler(signal.SIGTERM, interrupted.set)
    say = lambda m: console.print(f"• {m}")  # noqa: E731
    stopped_early = True  # until the summary is printed
    try:
        await loop.run_in_executor(
            None,
            _seed_models,
            first_models,
            settings.resolved_models_dir,
            served_by(settings).catalog(),
            say,
        )
        async with start_components(settings, on_progress=say) as c:
            consume = consume_loop(c, listeners=[stats.on_batch])
            consumer_task = asyncio.create_task(consume.run())
            await asyncio.wait_for(consume.ready.wait(), 30)
            stop_http = asyncio.Event()
            http_task = await _start_dashboard(c, settings, stop_http, console)
            try:
                await _stream(
                    c, settings, stats, (events, rate, seed), consumer_task, interrupted, console
                )
                consumer_died = consumer_task.done()
                if retrain and not interrupted.is_set() and not consumer_died:
                    await _retrain(Trainer(settings, c.ledger.engine), interrupted, say)
                latency = await c.ledger.latency_percentiles((0.5, 0.99))
                story = await _story(c)
                console.print()
                console.print(_summary(stats, latency))
                console.print(_story_tables(story))
                stopped_early = interrupted.is_set()
                if stay is None:
                    stay = console.is_terminal
                if stay and http_task is not None and not stopped_early:
                    console.print(
                        "[bold]The dashboard stays up[/] (link above) — Ctrl-C to stop the demo."
                    )
                    await interrupted.wait()
                consume.stop()
                await consumer_task
            finally:
                stop_http.set()
                if http_task is not None:
                    await http_task
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
    if stopped_early:
        console.print("[yellow]stopped early by Ctrl-C; the broker has been shut down.[/]")
    return stats


async def _stream(
    c: Components,
    settings: Settings,
    stats: DemoStats,
    run: tuple[int, float, int],
    consumer_task: asyncio.Task[None],
    interrupted: asyncio.Event,
    console: Console,
) -> None:
    """Send the simulator's events (and their outcomes) until each is decided or
    dead-lettered, the consumer stops, or Ctrl-C."""
    events, rate, seed = run
    console.print(
        f"• simulator sending {events:,} events (rate {rate or 'max'}/s); the fraud "
        f"pattern changes after event {_drift_at(events):,}"
    )
    stats.started = time.monotonic()

    def sent(n: int) -> None:
        stats.sent += n

    producer_task = asyncio.create_task(
        emit(
            c.bootstrap,
            generate(
                events, seed=seed, malformed_rate=0.02, outcomes=True, drift_at=_drift_at(events)
            ),
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
    await producer_task


def _drift_at(events: int) -> int:
    return events // 3


async def _retrain(
    trainer: Trainer, interrupted: asyncio.Event, say: Callable[[str], None]
) -> list[RunOutcome]:
    """Train every model with enough new outcomes (``DEMO_MIN_NEW``) or drifting, now;
    Ctrl-C abandons the run in progress (its child process is stopped, nothing is
    registered)."""
    # The consumer stores outcomes as they arrive; give the last ones a moment to land.
    await asyncio.sleep(1.0)
    due = await trainer.due()
    if not due:
        return []
    say(
        "trainer: "
        + ", ".join(f"{target} ({trigger})" for target, trigger in due.items())
        + " — Ctrl-C skips"
    )

    async def train_all() -> list[RunOutcome]:
        done: list[RunOutcome] = []
        for target, trigger in due.items():
            done += await trainer.train(target, trigger, on_progress=_prefixed(say, target))
        return done

    work = asyncio.create_task(train_all())
    stop = asyncio.create_task(interrupted.wait())
    await asyncio.wait([work, stop], return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if not work.done():
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        return []
    return work.result()


def _prefixed(say: Callable[[str], None], target: str) -> Callable[[str], None]:
    return lambda message: say(f"trainer {target}: {message}")


def _seed_models(
    first: Path,
    demo_models: Path,
    catalog: Mapping[str, DeclaredModel],
    say: Callable[[str], None],
) -> None:
    """Fill the demo's models folder afresh from the first models, training those missing
    (once: they are kept in ``first`` for the next run). Versions are hard-linked where
    the filesystem allows: a version folder is never changed once written."""
    if train_missing(first, catalog, on_progress=say):
        say(f"first models trained into {first}: the next demo reuses them")
    shutil.rmtree(demo_models, ignore_errors=True)
    try:
        shutil.copytree(first, demo_models, copy_function=os.link)
    except OSError:
        shutil.rmtree(demo_models, ignore_errors=True)
        shutil.copytree(first, demo_models)


@dataclass
class Story:
    """What the run did beyond counts: the rules that fired most and the trainer's view."""

    top_rules: list[tuple[str, str, int]]  # (event type, rule, hits)
    outcomes: int
    runs: list[TrainingRun]
    min_new: int
    serving: list[tuple[str, int, str]]  # (model, champion version, how it got there)


async def _start_dashboard(
    c: Components, settings: Settings, stop: asyncio.Event, console: Console
) -> asyncio.Task[None] | None:
    """Serve the API and dashboard for the run; a taken port falls back to a free one."""
    from app.store.keys import KeyStore
    from connectors.http.app import build_api
    from connectors.http.serve import serve_http

    api = build_api(c, KeyStore(c.ledger.engine, cache_s=settings.http.key_cache_s), settings)
    for port in dict.fromkeys((settings.http.port, 0)):
        ready = asyncio.Event()
        bound: list[int] = []

        def on_ready(p: int, bound: list[int] = bound, ready: asyncio.Event = ready) -> None:
            bound.append(p)
            ready.set()

        task = asyncio.create_task(
            serve_http(api, settings.http.host, port, stop=stop, on_ready=on_ready)
        )
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if bound:
            console.print(f"• dashboard: http://{settings.http.host}:{bound[0]}/")
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
    registry = ModelRegistry(c.ledger.engine)
    serving = []
    for name in c.types.catalog():
        record = await registry.champion(name)
        if record is not None:
            promoted = any(r.model == name and r.status == "promoted" for r in runs)
            how = "promoted by the trainer in this run" if promoted else "first model"
            serving.append((name, record.meta.version, how))
    return Story(top, outcomes, runs, c.settings.trainer.min_new, serving)


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
    trainer.add_column("versions")
    trainer.add_column("ROC-AUC / macro-F1 on recent data: champion → challenger")
    for run in story.runs:
        metric = "roc_auc" if "roc_auc" in run.challenger_metrics else "macro_f1"
        before = run.champion_metrics.get(metric)
        after = run.challenger_metrics.get(metric)
        change = f"{before:.3f} → {after:.3f}" if before is not None and after is not None else "—"
        versions = f"v{run.champion_version or '?'} → v{run.challenger_version or '?'}"
        trainer.add_row(run.model, run.trigger, run.status, versions, change)
    if not story.runs:
        trainer.add_row(
            "—",
            "—",
            f"no retrain: {story.outcomes:,} outcomes stored; the demo retrains a model "
            f"after {story.min_new:,} new labelled ones (try more --events)",
            "—",
            "—",
        )
    serving = Table(title="Models in service now")
    serving.add_column("model")
    serving.add_column("version", justify="right")
    serving.add_column("")
    for name, version, how in story.serving:
        serving.add_row(name, f"v{version}", how)
    return Group(rules, trainer, serving)


def _demo_settings(settings: Settings) -> Settings:
    """The demo's own data folder with a fresh ledger and its own models folder; the API
    open (no key) on loopback, for the dashboard; the trainer's demo thresholds."""
    demo_dir = settings.data_dir / "demo"
    _fresh_ledger(demo_dir)
    return settings.replace(
        data_dir=demo_dir,
        models={"dir": demo_dir / "models"},
        database={"url": None, "auto_migrate": True},
        http={"auth": False, "host": "127.0.0.1"},
        trainer={"min_new": DEMO_MIN_NEW, "budget_s": DEMO_BUDGET_S},
    )


def _fresh_ledger(demo_dir: Path) -> None:
    """Each demo run starts with an empty ledger (the seeded simulator reuses event ids)."""
    demo_dir.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        (demo_dir / f"arbiter.db{suffix}").unlink(missing_ok=True)
