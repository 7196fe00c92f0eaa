"""Scale-out: decisions/s with 1, 2 and 3 ``arbiter run`` processes in one consumer group.

Each scenario gets its own freshly started embedded Tansu broker (its memory storage
never frees), a new PostgreSQL database (the production store; several processes share
it) migrated beforehand, and the topic set created with ``--partitions`` partitions.
Then, for K processes:

1. K ``arbiter run`` child processes start with the same environment (one consumer
   group, first models, shipped rules, trainer off, HTTP API on a free port, a 2 s
   session timeout) and are waited for until each logs ``consuming``;
2. warm-up: a few hundred events (their own seed) are produced, round after round,
   until every process has decided some, i.e. the group has settled with partitions on
   every member and each member has scored its first batch;
3. measured: ``--events`` simulator events (the default mix, no malformed ones, so
   every event is one decision) are produced as fast as the producer goes, and the
   clock runs from the first send to the last ``published_at`` stamp in the ledger
   (the end of the pipeline: decided, stored, published).

The baseline, beside every figure, is the same workload through one process. Per
process: its share of the measured decisions (from its ``batch`` log lines), CPU
seconds during the measured phase and peak RSS (``VmHWM``); for the machine: CPU cores
busy during the measured phase (every process on it, other users included).

    .venv/bin/python bench/scale_out.py                     # ~3 min on 2 cores
    .venv/bin/python bench/scale_out.py --procs 1,2 --events 3000 --repeat 1 --no-record
    # also: --partitions, --repeat (rounds, order alternates), --models-dir, --pg, --seed

Needs PostgreSQL (``--pg``, default ``$ARBITER_TEST_PG`` or postgres@127.0.0.1/test: an
admin connection that may create and drop databases).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import SHIPPED_TYPES, append_results, git_commit, shipped_catalog

from app.processes.simulate import emit
from app.simulator.generate import generate
from app.trainer.jobs.first import train_missing
from connectors.broker import EmbeddedBroker
from connectors.kafka.client import ensure_topics

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("ARBITER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
WARMUP = 400  # events per warm-up round
SESSION_TIMEOUT_MS = 2_000  # a join costs about half of it on Tansu (docs/dependencies.md)
HEARTBEAT_MS = 300
TICK = os.sysconf("SC_CLK_TCK")


# --- one `arbiter run` child -----------------------------------------------------------


class Child:
    """``arbiter run`` as a child process, configured through its environment only."""

    def __init__(self, name: str, work: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = work / f"{name}.log"
        data = work / name
        data.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            **env,
            "ARBITER_DATA_DIR": str(data),
            "ARBITER_LOG_FORMAT": "json",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from app.cli import main; main()", "run"],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=log,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def decided(self) -> int:
        return sum(e.get("decided", 0) for e in self.lines() if e.get("event") == "batch")

    def consuming(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
        return any(e.get("event") == "consuming" for e in self.lines())

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def peak_rss_mib(self) -> float | None:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return None

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent not idle so far (every process, every core)."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]  # idle + iowait
    return (sum(parts[:8]) - idle) / TICK


# --- the store and the topics ----------------------------------------------------------


async def _admin(dsn: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def pg_database(admin: str) -> AsyncIterator[str]:
    """A new PostgreSQL database (created through the ``admin`` DSN), migrated to head;
    dropped afterwards. Yields its URL."""
    from app.store import migrate

    name = f"arbiter_scale_{uuid.uuid4().hex[:12]}"
    await _admin(admin, f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    url = f"{base}/{name}"
    try:
        await migrate.upgrade(url)
        yield url
    finally:
        await _admin(
            admin,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
        )
        await _admin(admin, f'DROP DATABASE IF EXISTS "{name}"')


def all_topics() -> list[str]:
    return [f"{k}.{t}" for t in SHIPPED_TYPES for k in ("events", "decisions", "outcomes", "dlq")]


class LedgerClock:
    """Counts decisions in the ledger and reads the last ``published_at``."""

    def __init__(self, url: str) -> None:
        import asyncpg

        self._dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        self._connect = asyncpg.connect
        self._conn: Any = None

    async def __aenter__(self) -> LedgerClock:
        self._conn = await self._connect(self._dsn)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._conn.close()

    async def published(self) -> int:
        return int(
            await self._conn.fetchval(
                "SELECT count(*) FROM decisions WHERE published_at IS NOT NULL"
            )
        )

    async def last_published(self) -> dt.datetime:
        value: dt.datetime = await self._conn.fetchval("SELECT max(published_at) FROM decisions")
        return value

    async def wait_published(self, n: int, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while (got := await self.published()) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{got:,} of {n:,} decisions published after {limit_s:.0f}s")
            await asyncio.sleep(0.05)


# --- one scenario -------------------------------------------------------------------------


@dataclass
class Figure:
    procs: int
    events: int
    seconds: float | None = None  # first send → last published_at
    produce_s: float | None = None
    startup_s: float | None = None  # start → every child consuming
    warmup_rounds: int = 0
    shares: list[int] = field(default_factory=list)  # measured decisions per child
    cpu_s: list[float] = field(default_factory=list)  # per child, measured phase
    broker_cpu_s: float = 0.0
    machine_cores: float | None = None
    rss_mib: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def rate(self) -> float | None:
        return self.events / self.seconds if self.seconds and not self.error else None


async def run_scenario(
    procs: int, args: argparse.Namespace, root: Path, models_dir: Path, seed: int
) -> Figure:
    fig = Figure(procs, args.events)
    work = root / f"p{procs}-{uuid.uuid4().hex[:6]}"
    work.mkdir(parents=True)
    print(f"[{procs} process(es)] starting broker, database, processes …", flush=True)
    children: list[Child] = []
    try:
        with EmbeddedBroker(log_file=work / "broker.log") as broker:
            async with pg_database(args.pg) as url:
                await ensure_topics(broker.bootstrap, all_topics(), args.partitions)
                env = {
                    "ARBITER_KAFKA_BOOTSTRAP": broker.bootstrap,
                    "ARBITER_DATABASE_URL": url,
                    "ARBITER_MODELS_DIR": str(models_dir),
                    "ARBITER_TRAINER_ENABLED": "false",
                    "ARBITER_KAFKA_TOPIC_PARTITIONS": str(args.partitions),
                    "ARBITER_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
                    "ARBITER_KAFKA_HEARTBEAT_INTERVAL_MS": str(HEARTBEAT_MS),
                    "ARBITER_HTTP_PORT": "0",
                }
                started = time.monotonic()
                children = [Child(f"arbiter-{i + 1}", work, env).start() for i in range(procs)]
                while not all(c.consuming() for c in children):
                    if time.monotonic() - started > args.timeout:
                        raise TimeoutError("the processes did not all start consuming in time")
                    await asyncio.sleep(0.2)
                fig.startup_s = time.monotonic() - started
                async with LedgerClock(url) as ledger:
                    await measure(fig, children, broker, ledger, args, seed)
                for child in children:
                    fig.rss_mib.append(child.peak_rss_mib() or 0.0)
                codes = [child.stop() for child in children]
                if any(code != 0 for code in codes):
                    raise RuntimeError(f"exit codes on SIGTERM: {codes}")
    except Exception as exc:  # one failing scenario must not hide the others
        fig.error = " / ".join(f"{type(exc).__name__}: {exc}".splitlines())[:240]
    finally:
        for child in children:
            child.stop()
    print(f"[{procs} process(es)] {fig.error or f'{fmt(fig.rate)} decisions/s'}", flush=True)
    return fig


async def measure(
    fig: Figure,
    children: Sequence[Child],
    broker: EmbeddedBroker,
    ledger: LedgerClock,
    args: argparse.Namespace,
    seed: int,
) -> None:
    def topic_for(t: str) -> str:
        return f"events.{t}"

    # Warm-up until every member has partitions and has decided a batch: the measured
    # phase then starts on a settled group with warm models in every process.
    done = 0
    for round_ in range(1, 11):
        warm = list(generate(WARMUP, seed=seed * 1000 + round_, malformed_rate=0.0))
        await emit(broker.bootstrap, warm, topic_for=topic_for)
        done += len(warm)
        await ledger.wait_published(done, args.timeout)
        fig.warmup_rounds = round_
        if all(c.decided() > 0 for c in children):
            break
    else:
        raise RuntimeError("after 10 warm-up rounds some process had still decided nothing")
    await asyncio.sleep(1.0)  # the last batch lines are written

    events = list(generate(args.events, seed=seed, malformed_rate=0.0))
    before_decided = [c.decided() for c in children]
    before_cpu = [c.cpu_s() for c in children]
    broker_before = proc_cpu_s(broker.pid or 0)
    machine_before = machine_busy_s()
    t0 = time.monotonic()
    wall0 = dt.datetime.now(dt.UTC)
    await emit(broker.bootstrap, events, topic_for=topic_for)
    fig.produce_s = time.monotonic() - t0
    await ledger.wait_published(done + len(events), args.timeout)
    elapsed = time.monotonic() - t0
    fig.seconds = (await ledger.last_published() - wall0).total_seconds()
    fig.machine_cores = (machine_busy_s() - machine_before) / elapsed
    fig.broker_cpu_s = proc_cpu_s(broker.pid or 0) - broker_before
    fig.cpu_s = [c.cpu_s() - b for c, b in zip(children, before_cpu, strict=True)]
    await asyncio.sleep(1.0)  # the last batch lines are written
    fig.shares = [c.decided() - b for c, b in zip(children, before_decided, strict=True)]


# --- report -------------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "—" if value is None else format(value, spec)


def row(fig: Figure, baseline: float | None) -> str:
    if fig.error:
        return f"| {fig.procs} | {fig.events:,} | FAILED: {fig.error} | | | | | | |"
    ratio = f"{fig.rate / baseline:.2f}x" if fig.rate and baseline else "—"
    shares = " / ".join(f"{s:,}" for s in fig.shares)
    cpu = " / ".join(f"{c:.1f}" for c in fig.cpu_s)
    rss = " / ".join(f"{r:,.0f}" for r in fig.rss_mib)
    return (
        f"| {fig.procs} | {fig.events:,} | {fmt(fig.rate)} | {fmt(baseline)} | {ratio} "
        f"| {fmt(fig.seconds, '.2f')} | {shares} | {cpu} (broker {fig.broker_cpu_s:.1f}) "
        f"| {fmt(fig.machine_cores, '.2f')} | {rss} | {fmt(fig.startup_s, '.1f')} |"
    )


TABLE_HEAD = (
    "| processes | N | decisions/s | baseline: 1 process | vs 1 process | seconds "
    "| decisions per process | CPU s per process (broker) | machine cores busy "
    "| peak RSS MiB per process | start-up s |\n"
    "|---:|---:|---:|---:|---:|---:|---|---|---:|---|---:|"
)


def table(figs: Sequence[Figure]) -> str:
    ones = [f.rate for f in figs if f.procs == 1 and f.rate]
    baseline = statistics.median(ones) if ones else None
    return "\n".join([TABLE_HEAD, *(row(f, baseline) for f in figs)])


def summary(figs: Sequence[Figure]) -> str:
    by: dict[int, list[float]] = {}
    for f in figs:
        if f.rate:
            by.setdefault(f.procs, []).append(f.rate)
    base = statistics.median(by[1]) if by.get(1) else None
    parts = []
    for procs, rates in sorted(by.items()):
        med = statistics.median(rates)
        rel = f" ({med / base:.2f}x)" if base else ""
        parts.append(f"{procs}: {med:,.0f}/s{rel}")
    return "- median decisions/s by processes: " + ", ".join(parts) if parts else ""


def section(figs: Sequence[Figure], args: argparse.Namespace) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join([".venv/bin/python bench/scale_out.py", *args.argv])
    return (
        f"\n## scale-out: decisions/s with 1, 2 and 3 `arbiter run` processes — {now}\n\n"
        f"- machine: {os.cpu_count()} CPUs (nproc), Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, load average before the run "
        f"{args.load_before}; the broker, PostgreSQL and every `arbiter run` share these "
        "cores, and so did other users of the machine (see machine cores busy)\n"
        f"- git commit: {git_commit()}\n"
        f"- command: `{command}`\n"
        f"- workload: {args.events:,} simulator events (default mix, seed {args.seed}+round, "
        f"no malformed) per scenario, {args.partitions} partitions per topic, PostgreSQL "
        "ledger (a new database per scenario), embedded Tansu (a new broker per scenario); "
        "K processes in one consumer group (range assignment, 2 s session timeout), warm-up "
        f"rounds of {WARMUP} events until every process has decided some; clock = first "
        "send → last `published_at`; baseline = the same workload through 1 process "
        "(median of its runs)\n"
        f"- rounds: {args.repeat}, order alternating\n\n"
        f"{table(figs)}\n\n{summary(figs)}\n"
    )


# --- driver ------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> list[Figure]:
    procs = [int(p) for p in args.procs.split(",")]
    figs: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="arbiter-scale-bench-") as tmp:
        root = Path(tmp)
        models_dir = args.models_dir or Path(tempfile.gettempdir()) / "arbiter-scale-bench-models"
        print(f"models: {models_dir} (training if absent) …", flush=True)
        await asyncio.get_running_loop().run_in_executor(
            None, train_missing, models_dir, shipped_catalog()
        )
        for round_ in range(args.repeat):
            order = procs if round_ % 2 == 0 else list(reversed(procs))
            for k in order:
                figs.append(await run_scenario(k, args, root, models_dir, args.seed + round_))
    return figs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", default="1,2,3", help="process counts, comma-separated")
    parser.add_argument("--events", type=int, default=6_000, help="measured events per run")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=2, help="rounds over --procs")
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per step")
    parser.add_argument("--models-dir", type=Path, help="reuse trained models from here")
    parser.add_argument("--pg", default=PG_ADMIN, help="PostgreSQL admin DSN (creates databases)")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    # The machine is shared: a busy neighbour shows up here, not silently in the figures.
    args.load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    figs = asyncio.run(main_async(args))
    print()
    print(table(figs))
    print()
    print(summary(figs))
    if not args.no_record:
        append_results(section(figs, args))
    return 1 if any(f.error for f in figs) else 0


if __name__ == "__main__":
    sys.exit(main())
