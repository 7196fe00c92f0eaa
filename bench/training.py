"""Training time vs dataset size: the trainer's time-bounded run on 10k, 100k and 1M
labelled transactions, phase by phase, beside a bare fit of the first model.

For each size ``n``, ``labelled_events("transaction", n, seed)`` (generation timed apart:
it is not training) becomes ``Record``s as the ledger would hand them over (payload =
``model_dump(mode="json")``), and then:

- **trainer**: ``run_job`` on a ``transaction.fraud`` job with no champion and
  ``Limits(budget_s=--budget, max_rows=--max-rows)``. Its progress messages mark the
  phases: dataset (``build_examples`` + time split), feature rows, feature selection,
  search (trials run, stopped by the budget or not), refit (the job's own ``refit_s``),
  judge (the rest until the challenger is written: holdout scoring, verdict and the
  drift reference, which scores every training row), write (artifact, reload,
  importances) and report.
- **baseline**: ``fit_tabular.fit(spec, events, labels)`` on the same events: one HGB with
  its default settings, no selection, no search, no cap, the newest 25 % held out.
  That is what the trainer costs on top of a bare fit. Its holdout is scored again
  after the timed call to give ``caught_at_review`` too.

Each (size, part) runs in a fresh process (this script with ``--one``), so a peak RSS
(``ru_maxrss``) is that part's alone; it includes the generated data.

    .venv/bin/python -m bench.training --sizes 10000,100000,1000000 --budget 60
    .venv/bin/python -m bench.training --sizes 10000,100000 --no-record
    .venv/bin/python -m bench.training --quick          # smoke: 3,000, 5 s budget, no record

Prints the tables and appends a dated section to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.declarations import DeclaredModel
from app.inference import tabular
from app.inference.tabular_fast import one_openmp_thread
from app.simulator.generate import labelled_events
from app.trainer.jobs import fit_tabular
from app.trainer.jobs.evaluate import binary_metrics
from app.trainer.jobs.job import run_job
from app.trainer.jobs.run import Limits, Record, TrainJob
from bench.benchlib import REPO, append_results, git_commit, shipped_catalog

MODEL = "transaction.fraud"


def shipped_model(name: str) -> DeclaredModel:
    """A model as schemas/*.yaml declares it."""
    return shipped_catalog()[name]


QUICK_SIZE = 3_000
# Phase -> the progress message that starts it (``app.trainer.jobs.job_tabular.run_tabular``).
PHASES = (
    ("dataset", ": building the dataset"),
    ("rows", ": feature rows ("),
    ("selection", ": feature selection"),
    ("search", ": model search"),
    ("refit", ": refitting"),
    ("write", ": writing the challenger"),
    ("report", ": writing the report"),
)
GIB = 1024**3


def peak_rss() -> float:
    """This process's peak resident set so far, in bytes (Linux: ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def rss_now() -> float:
    """This process's resident set now, in bytes."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * float(os.sysconf("SC_PAGE_SIZE"))


def to_records(events: list[Any], labels: Sequence[dict[str, Any]]) -> tuple[Record, ...]:
    """The ledger's view of the events; each event is dropped from ``events`` once dumped,
    so the objects and their payloads are not all held at once."""
    records = []
    for i, event in enumerate(events):
        records.append(
            Record(
                event.event_id,
                event.event_type,
                event.occurred_at,
                event.model_dump(mode="json"),
                labels[i],
            )
        )
        events[i] = None
    return tuple(records)


# --- one part of one size, in its own process ------------------------------------------


def trainer_part(n: int, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    events, labels = labelled_events("transaction", n, seed=args.seed)
    generate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    records = to_records(events, labels)
    del events, labels
    gc.collect()
    records_s = time.perf_counter() - t0
    rss_start, peak_start = rss_now(), peak_rss()

    marks: list[tuple[float, str]] = []

    def progress(message: str) -> None:
        marks.append((time.perf_counter(), message))
        if ": tried " not in message or args.verbose:
            print(f"    [{marks[-1][0] - started:7.1f} s] {message}", flush=True)

    limits = Limits(budget_s=args.budget, max_rows=args.max_rows or None)
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-training-") as tmp:
        job = TrainJob(
            target=MODEL,
            trigger="bench",
            run_ids={MODEL: 1},
            records=records,
            champions={MODEL: None},
            models_dir=Path(tmp) / "models",
            reports_dir=Path(tmp) / "reports",
            declared={MODEL: shipped_model(MODEL)},
            limits=limits,
        )
        started = time.perf_counter()
        (result,) = run_job(job, on_progress=progress)
        ended = time.perf_counter()
    if result.status != "trained":
        raise SystemExit(f"the trainer skipped {MODEL} at n={n:,}: {result.reason}")

    starts = {}
    for phase, needle in PHASES:
        starts[phase] = next(t for t, message in marks if needle in message)
    bounds = [*(starts[p] for p, _ in PHASES), ended]
    phases = {p: bounds[i + 1] - bounds[i] for i, (p, _) in enumerate(PHASES)}
    summary = result.summary
    phases["judge"] = phases["refit"] - summary["refit_s"]
    phases["refit"] = summary["refit_s"]
    trials = summary["candidates"]
    return {
        "n": n,
        "generate_s": generate_s,
        "records_s": records_s,
        "total_s": ended - started,
        "phases": phases,
        "trials": len(trials),
        "per_estimator": dict(Counter(t["estimator"] for t in trials)),
        # Each estimator's default runs whatever the budget: what bounds a large search.
        "first_s": {t["estimator"]: t["seconds"] for t in reversed(trials)},
        "stopped_by_budget": summary["search"]["stopped_by_budget"],
        "search_spent_s": summary["search"]["spent_s"],
        "best": summary["search"]["best"],
        "cleaning": summary["cleaning"],
        "n_train": summary["n_train"],
        "n_holdout": summary["n_holdout"],
        "kept_columns": len(summary["selection"]["kept"]),
        "dropped_columns": len(summary["selection"]["dropped"]),
        "metrics": result.challenger_metrics,
        "rss_start": rss_start,
        "peak_before": peak_start,
        "peak": peak_rss(),
    }


def baseline_part(n: int, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    events, labels = labelled_events("transaction", n, seed=args.seed)
    generate_s = time.perf_counter() - t0
    spec = shipped_model(MODEL)
    t0 = time.perf_counter()
    fitted = fit_tabular.fit(spec, events, labels)
    total_s = time.perf_counter() - t0
    peak = peak_rss()
    # Not timed: the holdout again, for the metrics ``fit`` does not give.
    order = sorted(range(len(events)), key=lambda i: events[i].occurred_at)
    cut = int(n * (1 - fit_tabular.HOLDOUT_SHARE))
    rows = tabular.rows_in_order(spec, [events[i] for i in order])[cut:]
    y = [int(bool(labels[i][spec.label])) for i in order[cut:]]
    x = tabular.pipeline_input(rows, fitted.numeric, fitted.categorical)
    with one_openmp_thread():
        proba = fitted.pipeline.predict_proba(x)[:, 1]
    metrics = binary_metrics(y, proba, review_rate=Limits().review_rate)
    return {
        "n": n,
        "generate_s": generate_s,
        "total_s": total_s,
        "fit_s": fitted.fit_seconds,
        "n_train": cut,
        "n_holdout": n - cut,
        "metrics": metrics,
        "peak": peak,
    }


# --- the driver: one process per (size, part), then the tables ----------------------


def run_part(n: int, part: str, args: argparse.Namespace, work: Path) -> dict[str, Any] | str:
    """The part's figures, or why it failed."""
    out = work / f"{part}-{n}.json"
    command = [
        sys.executable, "-m", "bench.training", "--one", str(n), "--part", part,
        "--out", str(out), "--budget", str(args.budget), "--seed", str(args.seed),
        "--max-rows", str(args.max_rows),
        *(["--verbose"] if args.verbose else []),
    ]  # fmt: skip
    print(f"  {part}, n={n:,} (fresh process)", flush=True)
    try:
        done = subprocess.run(command, cwd=REPO, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"timed out after {args.timeout:.0f} s"
    if done.returncode != 0 or not out.exists():
        return f"failed (exit status {done.returncode})"
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures


def seconds(value: float) -> str:
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def time_table(results: Sequence[tuple[int, Any, Any]]) -> str:
    lines = [
        "| labelled transactions | generate + records s (not training) | dataset s "
        "| feature rows s | selection s | search s (trials, budget stop) | refit s | judge s "
        "| write s | report s | trainer total s | records/s | baseline `fit_tabular.fit` s "
        "(of which fit) | baseline rows/s | trainer / baseline |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, trainer, base in results:
        if isinstance(trainer, str):
            cells = [trainer, *["—"] * 10]
        else:
            p = trainer["phases"]
            stop = "stopped" if trainer["stopped_by_budget"] else "all tried"
            cells = [
                f"{seconds(trainer['generate_s'])} + {seconds(trainer['records_s'])}",
                seconds(p["dataset"]),
                seconds(p["rows"]),
                seconds(p["selection"]),
                f"{seconds(p['search'])} ({trainer['trials']}, {stop})",
                seconds(p["refit"]),
                seconds(p["judge"]),
                seconds(p["write"]),
                seconds(p["report"]),
                seconds(trainer["total_s"]),
                f"{n / trainer['total_s']:,.0f}",
            ]
        if isinstance(base, str):
            cells += [base, "—", "—"]
        else:
            ratio = (
                "—" if isinstance(trainer, str) else f"{trainer['total_s'] / base['total_s']:.1f}x"
            )
            cells += [
                f"{seconds(base['total_s'])} ({seconds(base['fit_s'])})",
                f"{n / base['total_s']:,.0f}",
                ratio,
            ]
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def quality_table(results: Sequence[tuple[int, Any, Any]]) -> str:
    lines = [
        "| labelled transactions | trainer train / holdout (capped) | columns kept / dropped "
        "| trials per estimator (s of its default) | chosen (CV ROC-AUC) "
        "| ROC-AUC trainer / baseline | PR-AUC trainer / baseline "
        "| caught_at_review trainer / baseline "
        "| peak RSS GiB trainer (before `run_job`) / baseline |",
        "|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]

    def metric(figures: Any, key: str) -> str:
        return (
            "—" if isinstance(figures, str) else f"{figures['metrics'].get(key, float('nan')):.4f}"
        )

    for n, trainer, base in results:
        if isinstance(trainer, str):
            cells = ["—"] * 4
        else:
            best = trainer["best"]
            tried = ", ".join(
                f"{k} {v} ({trainer['first_s'][k]:.1f})"
                for k, v in trainer["per_estimator"].items()
            )
            params = ", ".join(f"{k}={v}" for k, v in best["params"].items())
            cells = [
                f"{trainer['n_train']:,} / {trainer['n_holdout']:,} "
                f"({trainer['cleaning']['capped']:,})",
                f"{trainer['kept_columns']} / {trainer['dropped_columns']}",
                tried,
                f"{best['estimator']} {params} ({best['cv_score']:.4f})",
            ]
        cells += [
            f"{metric(trainer, key)} / {metric(base, key)}"
            for key in ("roc_auc", "pr_auc", "caught_at_review")
        ]
        peak_t = "—" if isinstance(trainer, str) else (
            f"{trainer['peak'] / GIB:.2f} ({trainer['peak_before'] / GIB:.2f})"
        )  # fmt: skip
        peak_b = "—" if isinstance(base, str) else f"{base['peak'] / GIB:.2f}"
        cells.append(f"{peak_t} / {peak_b}")
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def limits_note(results: Sequence[tuple[int, Any, Any]], args: argparse.Namespace) -> str:
    """What bounds the figures: the budget by design, then the single-threaded rest."""
    shares = [
        f"{n:,}: {t['phases']['search'] / t['total_s']:.0%}"
        for n, t, _ in results
        if not isinstance(t, str)
    ]
    capped = [n for n in args.sizes if args.max_rows and n > args.max_rows]
    return (
        "- what limits it: the search stops at the budget by design (share of the "
        f"trainer's time: {', '.join(shares) or 'none measured'}), though each "
        "estimator's default runs whatever it costs; the rest is single-threaded Python "
        "(pydantic validation, feature rows) and one OpenMP thread, on cores shared with "
        "whatever else ran (load average above)"
        + (
            f". Above {args.max_rows:,} ({', '.join(f'{n:,}' for n in capped)}) the trainer "
            "validates newest first and stops at max_rows usable examples; older ones are unread"
            if capped
            else ""
        )
    )


def parse_sizes(text: str) -> list[int]:
    sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("sizes are event counts >= 1, e.g. 10000,100000")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--budget", type=float, default=60.0, help="search budget, seconds")
    parser.add_argument(
        "--max-rows",
        type=int,
        default=Limits().max_rows or 0,
        help="the trainer's cap on examples (Limits.max_rows; 0 = none)",
    )
    parser.add_argument("--seed", type=int, default=1, help="simulator seed (not the trainer's)")
    parser.add_argument("--timeout", type=float, default=3_600.0, help="seconds per part")
    parser.add_argument("--quick", action="store_true", help="smoke run; implies --no-record")
    parser.add_argument("--verbose", action="store_true", help="print every search trial")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child: one size
    parser.add_argument("--part", choices=("trainer", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one is not None:
        part = trainer_part if args.part == "trainer" else baseline_part
        args.out.write_text(json.dumps(part(args.one, args)))
        return 0
    if args.quick:
        args.sizes, args.budget, args.no_record = [QUICK_SIZE], min(args.budget, 5.0), True

    load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.perf_counter()
    results: list[tuple[int, Any, Any]] = []
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-training-") as tmp:
        for n in args.sizes:
            print(f"n={n:,}", flush=True)
            trainer = run_part(n, "trainer", args, Path(tmp))
            base = run_part(n, "baseline", args, Path(tmp))
            results.append((n, trainer, base))
    text = f"{time_table(results)}\n\n{quality_table(results)}"
    print()
    print(text)
    print(f"\n(total {time.perf_counter() - started:.0f}s)")
    if args.no_record:
        return 0
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    sizes = ",".join(str(n) for n in args.sizes)
    cap = f"{args.max_rows:,}" if args.max_rows else "none"
    section = (
        f"\n## training: time-bounded trainer vs dataset size — {now}\n\n"
        f"- machine: {os.cpu_count()} CPUs (nproc), {memory:.0f} GiB memory, Python "
        f"{platform.python_version()}, {platform.system()} {platform.machine()}, load "
        f"average before the run {load_before}\n"
        f"- git commit: {git_commit()}\n"
        f"- command: `.venv/bin/python -m bench.training --sizes {sizes} --budget "
        f"{args.budget:g}"
        + ("" if args.max_rows == Limits().max_rows else f" --max-rows {args.max_rows}")
        + "`\n"
        f'- data: `labelled_events("transaction", n, seed={args.seed})` (no label noise), '
        'as `Record`s with `model_dump(mode="json")` payloads; generating them is timed '
        "apart and is not training\n"
        f"- trainer: `run_job` for `{MODEL}`, no champion, `Limits(budget_s={args.budget:g}, "
        f"max_rows={cap})`, other limits default (3-fold time CV over logreg / hgb / "
        "forest, each default tried whatever the budget; one OpenMP thread). Phases are "
        "cut at the job's progress messages; refit = the job's `refit_s`; judge = the rest "
        "up to writing the challenger (holdout scoring, verdict, drift reference over every "
        "training row); write = artifact, reload, importances. records/s = labelled "
        "records handed in / trainer total\n"
        "- baseline: `fit_tabular.fit(spec, events, labels)` on the same events (feature rows, "
        "one default HGB on the oldest 75 %, holdout scoring; no selection, search or cap); "
        "caught_at_review scored again after the timed call. Where the trainer's cap "
        "keeps fewer examples than n, its holdout is the newest 25 % of those, not the "
        "baseline's\n"
        "- each (size, part) in a fresh process: peak RSS is `ru_maxrss` of that process, "
        "generated data included; in brackets the trainer's peak before `run_job` "
        "(generation and records), so a larger figure is `run_job`'s own\n"
        f"{limits_note(results, args)}\n\n"
        f"{text}\n"
    )
    return append_results(section)


if __name__ == "__main__":
    sys.exit(main())
