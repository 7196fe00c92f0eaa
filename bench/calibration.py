"""Calibration on real labelled data that ships inside scikit-learn: the trainer's served
model (calibrated), the same model's raw score (before calibration) and a plain
LogisticRegression, on the same 50/50 split.

Each data set is declared as a type, half of it given to the trainer as labelled
decisions (``run_job``, as ``arbiter train`` runs it), and the other half scored by the
served version. Appends a section to bench/RESULTS.md unless ``--no-record``.

    .venv/bin/python bench/calibration.py [--budget 10] [--no-record]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import append_results, git_commit
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from app.declarations import load_declarations, model_catalog
from app.inference import features
from app.inference.loading import load_served
from app.inference.tabular import ServedTabular
from app.trainer.jobs.evaluate import expected_calibration_error
from app.trainer.jobs.job import run_job
from app.trainer.jobs.run import Limits, Record, TrainJob

Data = tuple[np.ndarray, np.ndarray]


def digits_nine() -> Data:
    x, digit = load_digits(return_X_y=True)
    return x, (digit == 9).astype(int)


def digits_zero() -> Data:
    x, digit = load_digits(return_X_y=True)
    return x, (digit == 0).astype(int)


def cancer() -> Data:
    x, target = load_breast_cancer(return_X_y=True)
    return x, (target == 0).astype(int)  # malignant


SETS: dict[str, Callable[[], Data]] = {
    "digits: is it a 9 (10 %)": digits_nine,
    "digits: is it a 0 (10 %)": digits_zero,
    "breast cancer: malignant (37 %)": cancer,
}


def declaration(columns: int) -> str:
    fields = "".join(f"  f{i}: number\n" for i in range(columns))
    return (
        "type: sample\nid: sample_id\nkey: source\ntime: arrival\nfields:\n"
        f"  sample_id: string\n  source: string\n{fields}"
        "labels:\n  positive: boolean\nmodels:\n  - name: positive\n"
        "    predicts: {label: positive}\n"
    )


def figures(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {
        "error": float(np.mean((p >= 0.5) != y)) * 100,
        "auc": float(roc_auc_score(y, p)),
        "log_loss": float(log_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "mean": float(p.mean()),
    }


def run(name: str, data: Data, budget: float) -> list[str]:
    x, y = data
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    half = len(y) // 2
    tmp = Path(tempfile.mkdtemp(prefix="arbiter-bench-calibration-"))
    (tmp / "schemas").mkdir()
    (tmp / "schemas" / "sample.yaml").write_text(declaration(x.shape[1]), encoding="utf-8")
    declarations, problems = load_declarations(tmp / "schemas")
    if problems:
        raise SystemExit("\n".join(map(str, problems)))
    model = model_catalog([declarations["sample"].spec])["sample.positive"]

    def payload(i: int) -> dict[str, Any]:
        values = {f"f{j}": float(v) for j, v in enumerate(x[i])}
        return {"sample_id": f"s-{i:05d}", "source": f"s{i % 20}", **values}

    at = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    records = tuple(
        Record(f"s-{i:05d}", "sample", at, payload(i), {"positive": bool(y[i])})
        for i in range(half)
    )
    job = TrainJob(
        target="sample.positive",
        trigger="bench",
        run_ids={"sample.positive": 1},
        records=records,
        champions={"sample.positive": None},
        models_dir=tmp / "models",
        reports_dir=tmp / "reports",
        declared={"sample.positive": model},
        limits=Limits(budget_s=budget, min_train=100, min_holdout=50),
    )
    [result] = run_job(job)
    assert result.challenger is not None, result.reason
    served = load_served(tmp / "models", result.challenger)
    assert isinstance(served, ServedTabular)
    events = [declarations["sample"].model.model_validate(payload(i)) for i in range(half, len(y))]
    rows = features.Rows(served.numeric, served.categorical).fresh_rows(events, features.History())
    truth = y[half:]
    plain = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5_000))
    plain.fit(x[:half], y[:half])
    method = result.challenger.params["calibration"]["method"]
    estimator = result.challenger.params["estimator"]
    lines = []
    for label, p in (
        (f"Arbiter, served ({estimator}, {method})", served.proba(rows)),
        ("Arbiter, raw score (before calibration)", served.raw_proba(rows)),
        ("plain LogisticRegression", plain.predict_proba(x[half:])[:, 1]),
    ):
        f = figures(p, truth)
        lines.append(
            f"| {name} | {label} | {f['error']:.2f} % | {f['auc']:.4f} | {f['log_loss']:.4f} "
            f"| {f['ece']:.4f} | {f['mean']:.4f} vs {truth.mean():.4f} |"
        )
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=10.0, help="search seconds per model")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()
    lines = [
        "| data set | model | error at 0.5 | ROC-AUC | log loss | ECE | mean score vs rate |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, load in SETS.items():
        lines += run(name, load(), args.budget)
    if not args.no_record:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        append_results(
            f"## calibration: served scores vs a plain LogisticRegression — {stamp}\n\n"
            f"- commit {git_commit()}; `bench/calibration.py --budget {args.budget:g}`; "
            "each set split 50/50 at random (seed 0): the trainer learns from the first "
            "half, everything is measured on the second\n\n" + "\n".join(lines) + "\n"
        )


if __name__ == "__main__":
    main()
