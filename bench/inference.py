"""Inference throughput: the tabular models' compiled fast path against the scikit-learn
Pipeline it was compiled from, per batch size, with and without explanations.

For ``hgb`` and ``logreg`` ``transaction.fraud`` models (trained on ``--train``
simulator transactions, seed 1), scoring ``--events`` later transactions (seed 11) that
were turned into feature rows beforehand:

- **fast**: ``ServedTabular.predict_rows(batch, explain=False)``: compiled preprocessing
  (numpy) + the estimator (``expit(X @ w + b)`` / our tree walk, scikit-learn's own
  predictor for large tree batches).
- **fast + explanations**: ``predict_rows(batch)``, what the service runs.
- **pipeline** (baseline): the fitted ``Pipeline.predict_proba`` once per batch.
- **per-row** (baseline): ``Pipeline.predict_proba`` one row at a time over the batch.

rows/s = rows scored / seconds, best of ``--repeat`` passes of at least ``--seconds``
each. scikit-learn runs with one OpenMP thread everywhere (the default two spun for
~0.7 s per HGB call on 2 busy cores). Also measured: the explanation cost per batch of
500 rows (hgb, logreg, forest), feature-row building, and training: holdout metrics
and fit time of every estimator for both tabular models beside the baseline: the first
models, HGB on their fixed-width hand-made rows (rebuilt here by ``first_model_row``),
same split and weights. Then ``bench/inference_text.py``'s ``run_text_bench()`` if present.

    .venv/bin/python bench/inference.py               # prints; ~2 min on 2 cores
    .venv/bin/python bench/inference.py --append      # also appends to bench/RESULTS.md
    .venv/bin/python bench/inference.py --train 6000 --events 1500 --seconds 0.2 --repeat 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import append_results, git_commit, shipped_catalog
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from app.declarations import DeclaredModel
from app.inference import artifacts, features, tabular
from app.inference.features import History, Row
from app.simulator.generate import training_set
from app.simulator.shapes import Transaction
from app.trainer.jobs import fit_tabular
from app.trainer.jobs.dataset import target

REPO = Path(__file__).resolve().parent.parent
BATCHES = (1, 8, 64, 512)
EXPLAIN_BATCH = 500
SERVED = ("hgb", "logreg")
# The first models' one-hot vocabularies (their fixed-width rows are the baseline).
FIRST_CHANNELS = ("card_present", "online", "mobile_app", "atm", "transfer")
FIRST_CATEGORIES = ("grocery", "electronics", "travel", "gambling", "digital_goods",
                    "restaurants", "fuel", "jewelry", "money_transfer")  # fmt: skip
FIRST_DEVICES = ("mobile", "desktop", "pos", "atm", "unknown")
FIRST_PAYMENTS = ("card", "paypal", "bank_transfer", "gift_card", "crypto", "cash_on_delivery")


@dataclass(frozen=True)
class Rates:
    model: str
    batch: int
    fast: float
    explained: float
    pipeline: float
    per_row: float


def rows_per_second(
    rows: Sequence[Row], batch: int, score: Callable[[Sequence[Row]], Any], seconds: float
) -> float:
    """Score consecutive batches of ``rows`` (wrapping) for at least ``seconds``."""
    score(rows[:batch])  # warm: first-call costs are not throughput
    done, start, i = 0, time.perf_counter(), 0
    while True:
        offset = (i * batch) % max(len(rows) - batch, 1)
        chunk = rows[offset : offset + batch]
        score(chunk)
        done += len(chunk)
        i += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def best(repeat: int, measure: Callable[[], float]) -> float:
    return max(measure() for _ in range(repeat))


def served_model(fitted: fit_tabular.FittedTabular) -> tabular.ServedTabular:
    meta = artifacts.describe(fitted.spec.name, fitted, version=1, trained_on="bench")
    return tabular.ServedTabular(meta, fitted.pipeline)


def measure_rates(
    name: str, model: tabular.ServedTabular, rows: Sequence[Row], args: argparse.Namespace
) -> list[Rates]:
    def per_row(chunk: Sequence[Row]) -> None:
        for row in chunk:
            model.reference_proba([row])

    out = []
    for batch in BATCHES:

        def rate(score: Callable[[Sequence[Row]], Any], b: int = batch) -> float:
            return best(args.repeat, lambda: rows_per_second(rows, b, score, args.seconds))

        out.append(
            Rates(
                name,
                batch,
                fast=rate(lambda c: model.predict_rows(c, explain=False)),
                explained=rate(model.predict_rows),
                pipeline=rate(model.reference_proba),
                per_row=rate(per_row),
            )
        )
        print(f"  {name} batch {batch}: {out[-1]}", flush=True)
    return out


def explanation_cost(model: tabular.ServedTabular, rows: Sequence[Row], repeat: int) -> float:
    """Median extra milliseconds that explanations add to one batch of 500."""
    chunk = rows[:EXPLAIN_BATCH]
    extra = []
    for _ in range(max(repeat, 3) * 3):
        t0 = time.perf_counter()
        model.predict_rows(chunk, explain=False)
        t1 = time.perf_counter()
        model.predict_rows(chunk)
        t2 = time.perf_counter()
        extra.append((t2 - t1) - (t1 - t0))
    return statistics.median(extra) * 1e3


def first_model_row(event: Any) -> list[float]:
    """The first models' fixed-width row (before ``model_rows``): the baseline's input."""
    hour = event.occurred_at.astimezone(dt.UTC).hour
    if isinstance(event, Transaction):
        category = event.merchant_category
        return [
            math.log1p(event.amount),
            float(event.country != event.card_country),
            float(event.device.is_new),
            float(hour < 6),
            *(float(event.channel == c) for c in FIRST_CHANNELS),
            *(float(category == c) for c in FIRST_CATEGORIES),
            float(category not in FIRST_CATEGORIES),
            *(float(event.device.kind == d) for d in FIRST_DEVICES),
        ]
    quantities = [item.quantity for item in event.items]
    return [
        math.log1p(event.total),
        float(len(event.items)),
        float(sum(quantities)),
        float(max(quantities)),
        math.log1p(max(item.unit_price for item in event.items)),
        float(event.billing_country != event.shipping_country),
        float(event.first_order),
        float(hour < 6),
        *(float(event.payment_method == p) for p in FIRST_PAYMENTS),
    ]


def first_model_auc(spec: DeclaredModel, events: Sequence[Any], labels: Sequence[Any]) -> float:
    """The baseline: the first models' HGB on fixed-width rows, same split and weights."""
    order = sorted(range(len(events)), key=lambda i: events[i].occurred_at)
    x = np.asarray([first_model_row(events[i]) for i in order], dtype=np.float64)
    y = np.asarray([target(spec, labels[i]) is True for i in order], dtype=int)
    cut = int(len(y) * (1 - fit_tabular.HOLDOUT_SHARE))
    positives = int(y[:cut].sum())
    weight = np.sqrt(np.where(y[:cut] == 1, (cut - positives) / positives, 1.0))
    model = fit_tabular.make_estimator("hgb", 0)
    assert isinstance(model, HistGradientBoostingClassifier)
    with threadpool_limits(1, user_api="openmp"):
        model.fit(x[:cut], y[:cut], sample_weight=weight)
        proba = model.predict_proba(x[cut:])[:, 1]
    return float(roc_auc_score(y[cut:], proba))


def training_table(args: argparse.Namespace) -> tuple[str, dict[str, fit_tabular.FittedTabular]]:
    lines = [
        "| model | estimator | train / holdout | ROC-AUC | baseline ROC-AUC (first model) "
        "| PR-AUC | Brier | log loss | fit s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    kept: dict[str, fit_tabular.FittedTabular] = {}
    for spec in [m for m in shipped_catalog().values() if m.family == "tabular"]:
        n = args.train if spec.event_type == "transaction" else int(args.train * 2 / 3)
        events, labels = training_set(spec.event_type, n, seed=1)
        baseline = first_model_auc(spec, events, labels)
        cut = int(n * (1 - fit_tabular.HOLDOUT_SHARE))
        for estimator in fit_tabular.ESTIMATORS:
            fitted = fit_tabular.fit(spec, events, labels, estimator=estimator)
            m = fitted.metrics
            lines.append(
                f"| {spec.name} | {estimator} | {cut:,} / {n - cut:,} | {m['roc_auc']:.4f} "
                f"| {baseline:.4f} | {m['pr_auc']:.4f} | {m['brier']:.4f} "
                f"| {m['log_loss']:.4f} | {fitted.fit_seconds:.2f} |"
            )
            print(lines[-1], flush=True)
            if spec.event_type == "transaction":
                kept[estimator] = fitted
    return "\n".join(lines), kept


def rates_table(rates: Sequence[Rates]) -> str:
    lines = [
        "| model | batch | fast rows/s | fast + explanations rows/s | pipeline rows/s "
        "(baseline) | per-row rows/s (baseline) | fast / pipeline | fast / per-row "
        "| µs per row fast / pipeline |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rates:
        lines.append(
            f"| {r.model} | {r.batch} | {r.fast:,.0f} | {r.explained:,.0f} | {r.pipeline:,.0f} "
            f"| {r.per_row:,.0f} | {r.fast / r.pipeline:.1f}x | {r.fast / r.per_row:.1f}x "
            f"| {1e6 / r.fast:,.1f} / {1e6 / r.pipeline:,.1f} |"
        )
    return "\n".join(lines)


def text_section() -> str:
    """``bench/inference_text.py``'s figures, if that benchmark exists yet."""
    try:
        from inference_text import run_text_bench  # type: ignore[import-not-found]
    except ImportError:
        return "- text models: `bench/inference_text.py` not present; not measured"
    result = run_text_bench()
    return result if isinstance(result, str) else "\n".join(result)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=30_000, help="transactions to train on")
    parser.add_argument("--events", type=int, default=4_000, help="transactions to score")
    parser.add_argument("--seconds", type=float, default=0.5, help="minimum per pass")
    parser.add_argument("--repeat", type=int, default=3, help="passes; best is kept")
    parser.add_argument("--append", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.perf_counter()

    print("training ...", flush=True)
    training, fitted = training_table(args)
    stream, _ = training_set("transaction", args.events, seed=11)
    t0 = time.perf_counter()
    rows = features.model_rows(shipped_catalog()["transaction.fraud"], stream, History())
    row_rate = len(rows) / (time.perf_counter() - t0)

    rates: list[Rates] = []
    costs: list[str] = []
    for name in fit_tabular.ESTIMATORS:
        model = served_model(fitted[name])
        if name in SERVED:
            rates += measure_rates(name, model, rows, args)
        ms = explanation_cost(model, rows, args.repeat)
        costs.append(
            f"{name} ({model.method}) {ms:.1f} ms ({ms * 1e3 / EXPLAIN_BATCH:.0f} µs per row)"
        )
    text = (
        f"{rates_table(rates)}\n\n"
        f"- explanations, extra time per batch of {EXPLAIN_BATCH} (median): "
        + "; ".join(costs)
        + f"\n- feature rows (`model_rows`, with history): {row_rate:,.0f} transactions/s\n\n"
        f"{training}\n\n{text_section()}"
    )
    print()
    print(text)
    print(f"\n(total {time.perf_counter() - started:.0f}s)")
    if not args.append:
        return 0
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"\n## inference: tabular fast path vs scikit-learn Pipeline — {now}\n\n"
        f"- machine: {os.cpu_count()} CPUs (nproc), Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, load average before the run "
        f"{load_before}\n"
        f"- git commit: {git_commit()}\n"
        f"- models: `transaction.fraud` trained on {args.train:,} simulator transactions "
        f"(seed 1; `order.risk` on {int(args.train * 2 / 3):,} orders); scored: "
        f"{args.events:,} later transactions (seed 11) as feature rows built beforehand; "
        f"rows/s = best of {args.repeat} passes of >= {args.seconds} s. Baselines: the "
        "same fitted Pipeline's `predict_proba` per batch, and per row looped over the "
        "batch; scikit-learn limited to one OpenMP thread throughout\n"
        "- fast = compiled preprocessing + estimator (logreg: `expit(X @ w + b)`; hgb: "
        "numpy walk of all trees for batches up to 30,000 rows x trees, scikit-learn's "
        "predictor above); fast + explanations is what the service runs (linear-exact "
        "terms / occlusion per input feature)\n\n"
        f"{text}\n"
    )
    return append_results(section)


if __name__ == "__main__":
    sys.exit(main())
