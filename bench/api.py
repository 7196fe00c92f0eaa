"""HTTP API: ``POST /v1/decide/transaction`` at fixed offered loads, beside ``GET /healthz``.

The server is the real thing in its own process (``--serve``): ``start_components`` with
an embedded Tansu broker and a SQLite ledger in a temporary folder, the ``ConsumeLoop``
beside it, ``build_api`` + ``serve_http`` on a free loopback port, API keys on (one key
with the ``decide`` scope, rate limit raised out of the way), no webhook endpoints.

The load generator is open-loop: for each offered rate R it schedules R x D requests at
fixed times, whatever the responses do, each sent on its own task over one shared
``httpx.AsyncClient``. Latency runs from the *scheduled* send time to the end of the
response, so a server that falls behind shows it as latency instead of silently
slowing the generator down (no coordinated omission). Every decide request carries a
fresh simulator transaction (a new ``event_id``). The baseline, beside every figure, is
the same open-loop schedule against ``GET /healthz`` on the same server: the cost of
the HTTP stack itself (uvicorn, FastAPI, the middleware, httpx on the client side).

Besides the client's view the server reports, per run, its own time per request (app
entry → response), the coalesced ``BatchProcessor.process`` batches (size, seconds),
the two ledger look-ups per request, and its CPU seconds.

    .venv/bin/python bench/api.py                    # ~1.5 min on 2 cores, models cached
    .venv/bin/python bench/api.py --rates 50,100 --seconds 5 --no-record
    # also: --models-dir (default: a cache under the temp folder; trained if absent)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = Path(tempfile.gettempdir()) / "arbiter-api-bench-models"
WARMUP_S = 3.0
WARMUP_RATE = 20.0


# --- the server (--serve) -----------------------------------------------------------


@dataclass
class ServerStats:
    """What the server saw since the last ``/bench/stats`` read."""

    request_s: dict[str, list[float]] = field(default_factory=dict)
    batches: list[tuple[int, float]] = field(default_factory=list)
    lookups_s: list[float] = field(default_factory=list)
    decider_s: list[float] = field(default_factory=list)

    def take(self) -> dict[str, Any]:
        out = {
            "request_s": self.request_s,
            "batches": self.batches,
            "lookups_s": self.lookups_s,
            "decider_s": self.decider_s,
        }
        self.request_s, self.batches, self.lookups_s, self.decider_s = {}, [], [], []
        return out


def timed(
    fn: Callable[..., Awaitable[Any]], record: Callable[[Any, float], None]
) -> Callable[..., Awaitable[Any]]:
    async def wrapper(arg: Any, *rest: Any, **kw: Any) -> Any:
        started = time.perf_counter()
        try:
            return await fn(arg, *rest, **kw)
        finally:
            record(arg, time.perf_counter() - started)

    return wrapper


async def serve(models_dir: Path, work: Path) -> None:
    """Run the API until SIGTERM; print ``READY <port> <key>`` once it listens."""
    from fastapi import Request, Response

    from app.logs import configure_logging
    from app.settings import Settings
    from app.store.keys import KeyStore
    from app.wiring import consume_loop, start_components
    from connectors.http.app import build_api
    from connectors.http.serve import serve_http

    configure_logging("console", "error")
    settings = Settings(
        kafka_bootstrap=None,  # embedded Tansu broker
        database_url=f"sqlite+aiosqlite:///{work / 'ledger.db'}",
        data_dir=work,
        models_dir=models_dir,
        auto_migrate=True,
        trainer_enabled=False,
        models_poll_s=0,
        webhooks_enabled=False,
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
        http_rate_per_s=1e6,  # the limiter runs, but never refuses the benchmark's load
        http_rate_burst=1_000_000,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    stats = ServerStats()
    async with start_components(settings, on_progress=lambda _msg: None) as c:
        keys = KeyStore(c.ledger.engine)
        _, key = await keys.create("bench", ["decide"])
        processor, ledger = c.processor, c.ledger

        def on_batch(records: Any, seconds: float) -> None:
            if records:
                stats.batches.append((len(records), seconds))

        processor.process = timed(processor.process, on_batch)  # type: ignore[method-assign,assignment]
        ledger.find_decisions = timed(  # type: ignore[method-assign,assignment]
            ledger.find_decisions, lambda _ids, s: stats.lookups_s.append(s)
        )
        app = build_api(c, keys, settings)
        decider = app.state.api.decider
        decider.decide = timed(decider.decide, lambda _r, s: stats.decider_s.append(s))

        async def observe(request: Request, call_next: Any) -> Response:
            started = time.perf_counter()
            response: Response = await call_next(request)
            path = request.url.path.split("/")[2] if request.url.path.startswith("/v1/") else ""
            name = path or request.url.path.strip("/")
            stats.request_s.setdefault(name, []).append(time.perf_counter() - started)
            return response

        app.middleware("http")(observe)

        async def bench_stats() -> dict[str, Any]:
            return stats.take()

        app.add_api_route("/bench/stats", bench_stats, methods=["GET"])
        loop = consume_loop(c)
        consuming = asyncio.create_task(loop.run())
        await asyncio.wait_for(loop.ready.wait(), 60)

        def ready(port: int) -> None:
            print(f"READY {port} {key}", flush=True)

        try:
            async with app.router.lifespan_context(app):
                await serve_http(app, "127.0.0.1", 0, stop=stop, on_ready=ready)
        finally:
            loop.stop()
            await consuming


# --- the load generator -------------------------------------------------------------


@dataclass
class Run:
    """One open-loop run of ``rate`` requests/s for ``seconds`` against ``endpoint``."""

    endpoint: str
    rate: float
    seconds: float
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    timeouts: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # scheduled send → response
    send_lag_ms: list[float] = field(default_factory=list)  # scheduled → task started
    elapsed_s: float = 0.0  # first scheduled send → last response
    cpu_s: dict[str, float] = field(default_factory=dict)  # server, broker, client, machine
    server: dict[str, Any] = field(default_factory=dict)

    @property
    def achieved(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def failed(self) -> int:
        return sum(self.errors.values()) + self.timeouts


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (nearest rank), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads), 0.0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def child_pids(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def machine_busy_s() -> float:
    """CPU seconds the whole machine (every process, ours or not) has spent busy."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / CLK_TCK


@dataclass
class CpuMeter:
    """CPU seconds of the server, its broker, this process and the machine, between marks."""

    server_pid: int

    def read(self) -> dict[str, float]:
        return {
            "server": process_cpu_s(self.server_pid),
            "broker": sum(process_cpu_s(p) for p in child_pids(self.server_pid)),
            "client": time.process_time(),
            "machine": machine_busy_s(),
        }


async def open_loop(
    client: httpx.AsyncClient,
    run: Run,
    request: Callable[[int], Awaitable[httpx.Response]],
) -> Run:
    """Send request ``i`` at ``start + i / rate`` whatever came back before."""
    loop = asyncio.get_running_loop()
    n = int(run.rate * run.seconds)
    start = loop.time() + 0.05
    last_done = start

    async def one(i: int, at: float) -> None:
        nonlocal last_done
        run.send_lag_ms.append((loop.time() - at) * 1e3)
        try:
            response = await request(i)
        except httpx.TimeoutException:
            run.timeouts += 1
            return
        except httpx.HTTPError as exc:
            name = type(exc).__name__
            run.errors[name] = run.errors.get(name, 0) + 1
            return
        done = loop.time()
        last_done = max(last_done, done)
        if response.status_code == 200:
            run.ok += 1
            run.latencies_ms.append((done - at) * 1e3)
        else:
            name = str(response.status_code)
            run.errors[name] = run.errors.get(name, 0) + 1

    tasks: list[asyncio.Task[None]] = []
    for i in range(n):
        at = start + i / run.rate
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, at)))
    await asyncio.gather(*tasks)
    run.sent = n
    run.elapsed_s = last_done - start
    return run


def transaction_bodies(n: int, seed: int) -> Iterator[bytes]:
    """``n`` valid simulator transactions as produced, each with its own event_id."""
    from app.simulator.generate import generate

    for event in generate(n, seed=seed, mix={"transaction": 1}, malformed_rate=0):
        yield event.value


@contextlib.contextmanager
def server_process(models_dir: Path, timeout_s: float) -> Iterator[tuple[int, str, int]]:
    """The ``--serve`` process: yields (port, key, pid); SIGTERM and wait on exit."""
    with tempfile.TemporaryDirectory(prefix="arbiter-api-bench-") as work:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--models-dir", str(models_dir), "--work", work],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + timeout_s
            line = ""
            while not line.startswith("READY "):
                line = proc.stdout.readline()
                if not line and proc.poll() is not None:
                    raise RuntimeError(f"the server exited with {proc.returncode} before READY")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the server was not ready after {timeout_s:.0f}s")
            _, port, key = line.split()
            yield int(port), key, proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def server_stats(client: httpx.AsyncClient) -> dict[str, Any]:
    """The server's figures since the last read; retried once, because uvicorn closes
    keep-alive connections idle for 5 s and httpx may pick one just as it goes."""
    try:
        response = await client.get("/bench/stats")
    except httpx.TransportError:
        response = await client.get("/bench/stats")
    result: dict[str, Any] = response.json()
    return result


async def wait_ready(client: httpx.AsyncClient, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get("/readyz")).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"/readyz did not answer 200 within {timeout_s:.0f}s")
        await asyncio.sleep(0.2)


async def measure(args: argparse.Namespace, port: int, key: str, pid: int) -> list[Run]:
    rates = [float(r) for r in args.rates.split(",")]
    warm_n = int(WARMUP_RATE * WARMUP_S)
    total = warm_n + int(sum(rates) * args.seconds)
    print(f"generating {total:,} transactions …", flush=True)
    bodies = list(transaction_bodies(total, args.seed))
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=4000, max_keepalive_connections=4000)
    timeout = httpx.Timeout(args.timeout)
    runs: list[Run] = []
    meter = CpuMeter(pid)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=timeout
    ) as client:
        await wait_ready(client)
        used = 0

        def decide(offset: int) -> Callable[[int], Awaitable[httpx.Response]]:
            def send(i: int) -> Awaitable[httpx.Response]:
                return client.post(
                    "/v1/decide/transaction", content=bodies[offset + i], headers=headers
                )

            return send

        def healthz(_i: int) -> Awaitable[httpx.Response]:
            return client.get("/healthz")

        warm = await open_loop(client, Run("decide", WARMUP_RATE, WARMUP_S), decide(used))
        used += warm.sent
        print(f"warm-up: {warm.ok}/{warm.sent} decided", flush=True)
        await server_stats(client)
        for rate in rates:
            for endpoint in ("healthz", "decide"):
                send = healthz if endpoint == "healthz" else decide(used)
                before = meter.read()
                run = await open_loop(client, Run(endpoint, rate, args.seconds), send)
                after = meter.read()
                run.cpu_s = {k: after[k] - before[k] for k in after}
                if endpoint == "decide":
                    used += run.sent
                run.server = await server_stats(client)
                runs.append(run)
                print(f"  {row(run)}", flush=True)
                await asyncio.sleep(1.0)  # let stragglers and the consume loop settle
    return runs


# --- report -------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def row(run: Run) -> str:
    lat = run.latencies_ms
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(run.errors.items())) or "0"
    cores = " / ".join(
        f"{run.cpu_s.get(k, 0.0) / run.elapsed_s:.2f}" if run.elapsed_s else "—"
        for k in ("server", "broker", "client", "machine")
    )
    return (
        f"| {run.rate:,.0f} | {run.endpoint} | {run.sent:,} | {run.achieved:,.1f} "
        f"| {ms(percentile(lat, 50))} | {ms(percentile(lat, 90))} | {ms(percentile(lat, 99))} "
        f"| {ms(max(lat) if lat else None)} | {errors} | {run.timeouts} "
        f"| {ms(percentile(run.send_lag_ms, 99))} | {cores} |"
    )


def table(runs: Sequence[Run]) -> str:
    lines = [
        "| offered req/s | endpoint | sent | achieved req/s | p50 ms | p90 ms | p99 ms "
        "| max ms | errors | timeouts | send lag p99 ms "
        "| CPU cores: server / broker / client / machine |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    lines += [row(r) for r in runs]
    return "\n".join(lines)


def breakdown(runs: Sequence[Run]) -> str:
    """Where a decide request's time goes, as the server saw it."""
    lines = [
        "| offered req/s | client p50 / p99 ms | server in-app p50 / p99 ms "
        "| healthz in-app p50 ms | decider wait p50 / p99 ms | process() batches "
        "| batch size mean / max | process() per batch p50 / p99 ms "
        "| ledger look-up p50 / p99 ms (2 per request) | server CPU ms per decide |",
        "|---:|---|---|---:|---|---:|---|---|---|---:|",
    ]
    health = {r.rate: r for r in runs if r.endpoint == "healthz"}
    for run in (r for r in runs if r.endpoint == "decide"):
        s = run.server
        app_ms = [x * 1e3 for x in s.get("request_s", {}).get("decide", [])]
        h = health.get(run.rate)
        h_ms = [x * 1e3 for x in (h.server.get("request_s", {}).get("healthz", []) if h else [])]
        batches = s.get("batches", [])
        sizes = [b[0] for b in batches]
        batch_ms = [b[1] * 1e3 for b in batches]
        look_ms = [x * 1e3 for x in s.get("lookups_s", [])]
        wait_ms = [x * 1e3 for x in s.get("decider_s", [])]
        cpu_per = run.cpu_s.get("server", 0.0) * 1e3 / run.ok if run.ok else None
        lat = run.latencies_ms
        lines.append(
            f"| {run.rate:,.0f} | {ms(percentile(lat, 50))} / {ms(percentile(lat, 99))} "
            f"| {ms(percentile(app_ms, 50))} / {ms(percentile(app_ms, 99))} "
            f"| {ms(percentile(h_ms, 50))} "
            f"| {ms(percentile(wait_ms, 50))} / {ms(percentile(wait_ms, 99))} | {len(batches):,} "
            f"| {statistics.fmean(sizes) if sizes else 0:.1f} / {max(sizes, default=0)} "
            f"| {ms(percentile(batch_ms, 50))} / {ms(percentile(batch_ms, 99))} "
            f"| {ms(percentile(look_ms, 50))} / {ms(percentile(look_ms, 99))} | {ms(cpu_per)} |"
        )
    return "\n".join(lines)


def saturation(runs: Sequence[Run]) -> str:
    """Where decide stopped keeping up, and the server's CPU share that explains it."""
    decides = [r for r in runs if r.endpoint == "decide"]
    kept = [r.rate for r in decides if r.ok == r.sent and r.achieved >= 0.95 * r.rate]
    lines = [f"- decide kept up with offered loads up to {max(kept, default=0):,.0f}/s"]
    for r in decides:
        server = r.cpu_s.get("server", 0.0)
        if r.ok and server:
            lines.append(
                f"- at {r.rate:,.0f}/s: {r.achieved:,.1f}/s achieved; the server had "
                f"{server / r.elapsed_s:.2f} cores at {server * 1e3 / r.ok:.1f} ms CPU per "
                f"decide; the machine was {r.cpu_s.get('machine', 0.0) / r.elapsed_s:.2f} "
                f"of {os.cpu_count()} cores busy"
            )
    return "\n".join(lines)


def results_section(runs: Sequence[Run], args: argparse.Namespace) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    from benchlib import git_commit

    return (
        f"\n## HTTP API: /v1/decide at fixed offered loads (open loop) — {now}\n\n"
        f"- machine: {os.cpu_count()} CPUs (nproc), Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, load average before the run "
        f"{args.load_before}\n"
        f"- git commit: {git_commit()}\n"
        f"- command: `.venv/bin/python bench/api.py {' '.join(args.argv)}`\n"
        "- server: `start_components` (embedded Tansu, SQLite ledger, first models, shipped "
        "rules, no webhook endpoints) + `ConsumeLoop` + `build_api` + `serve_http`, in its "
        "own process, one event loop; API key auth on (rate limit raised out of the way)\n"
        f"- load: open loop over loopback, one shared `httpx.AsyncClient`; R x {args.seconds:g}"
        " s requests at fixed times, each on its own task; latency = scheduled send → "
        "response (queueing included); achieved = 200s / (first scheduled send → last "
        f"response); timeout {args.timeout:g} s; {WARMUP_S:g} s of decide warm-up at "
        f"{WARMUP_RATE:g}/s first. decide = a fresh simulator transaction per request "
        "(`POST /v1/decide/transaction`); baseline healthz = `GET /healthz` at the same "
        "schedule on the same server (the HTTP stack's own cost)\n"
        "- send lag = how late the generator started a request's task (its own overload "
        "shows here); CPU cores = CPU seconds / run seconds, from /proc: the server process "
        "(all threads), its Tansu broker, this load generator, and the whole machine "
        "(every process, including other users of these cores)\n\n"
        f"{table(runs)}\n\n"
        "Decide latency breakdown (server side; in-app = a middleware around the app, request "
        "entry → response; decider wait = `Decider.decide`, queued behind the batch being "
        "decided + its own batch's `BatchProcessor.process`; look-ups = "
        "`Ledger.find_decisions`, connection checkout included):\n\n"
        f"{breakdown(runs)}\n\n{saturation(runs)}\n"
    )


async def main_async(args: argparse.Namespace) -> list[Run]:
    started = time.perf_counter()
    if not args.models_dir.exists():
        print(f"training the first models into {args.models_dir} (once) …", flush=True)
    with server_process(args.models_dir, args.start_timeout) as (port, key, pid):
        print(f"server ready on port {port} in {time.perf_counter() - started:.1f}s", flush=True)
        return await measure(args, port, key, pid)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="40,80,160", help="offered requests/s, comma-sep.")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--start-timeout", type=float, default=600.0)
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.models_dir, args.work))
        return 0
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.perf_counter()
    runs = asyncio.run(main_async(args))
    print()
    print(table(runs))
    print()
    print(breakdown(runs))
    print(f"\n(total {time.perf_counter() - started:.0f}s)")
    if args.no_record:
        return 0
    from benchlib import append_results

    return append_results(results_section(runs, args))


if __name__ == "__main__":
    sys.exit(main())
