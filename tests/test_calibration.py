"""Scores that mean what they say: the trainer calibrates every yes/no model on rows its
fit did not see, serving applies the calibration, and promotion weighs log loss beside
ROC-AUC. Checked on a real labelled data set that ships inside scikit-learn (the
handwritten digits: "is it a 9?", 10 % positive), against a plain LogisticRegression on
the same split."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from app.declarations import load_declarations, model_catalog
from app.inference import features
from app.inference.calibration import Calibration
from app.inference.loading import load_served
from app.inference.tabular import ServedTabular
from app.trainer.jobs.calibrate import ISOTONIC_MIN_ROWS, fit_calibration
from app.trainer.jobs.evaluate import binary_metrics, binary_verdict, expected_calibration_error
from app.trainer.jobs.job import run_job
from app.trainer.jobs.run import Limits, Record, TrainJob

pytestmark = [pytest.mark.timeout(240)]

# --- the calibration itself -------------------------------------------------------------


def inflated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes at a 5 % rate and raw scores that over-state it about threefold (what a
    model fit with the rare class weighted up gives), ranking well."""
    rng = np.random.default_rng(seed)
    truth = np.clip(rng.beta(0.6, 11.0, n), 0, 1)  # the true probability per row
    y = (rng.random(n) < truth).astype(int)
    raw = 1 / (1 + np.exp(-(np.log(truth / (1 - truth)) + 1.2)))
    return raw, y


@pytest.mark.parametrize(("n", "method"), [(800, "platt"), (20_000, "isotonic")])
def test_a_calibration_maps_inflated_scores_to_the_observed_rate(n: int, method: str) -> None:
    """Small sets get Platt scaling, large ones isotonic regression; either way the
    calibrated scores' mean meets the rate, the ECE falls, and the order is kept."""
    raw, y = inflated(n, seed=3)
    calibration = fit_calibration(raw, y)
    assert calibration.method == method
    assert (n >= ISOTONIC_MIN_ROWS) == (method == "isotonic")
    fresh_raw, fresh_y = inflated(20_000, seed=4)  # judged on rows it was not fit on
    calibrated = calibration.apply(fresh_raw)
    assert abs(calibrated.mean() - fresh_y.mean()) < 0.2 * fresh_y.mean()
    assert abs(fresh_raw.mean() - fresh_y.mean()) > fresh_y.mean()  # it was inflated
    before = expected_calibration_error(fresh_y, fresh_raw)
    after = expected_calibration_error(fresh_y, calibrated)
    assert after < before / 3, (before, after)
    order = np.argsort(fresh_raw)
    assert np.all(np.diff(calibrated[order]) >= -1e-12)  # it only ever rises
    assert calibrated.min() > 0
    assert calibrated.max() < 1
    assert Calibration.from_json(calibration.to_json()) == calibration


def test_a_set_with_one_outcome_is_not_calibrated_and_old_versions_read_as_identity() -> None:
    assert fit_calibration(np.asarray([0.2, 0.4]), np.asarray([0, 0])).method == "none"
    identity = Calibration.from_json(None)
    assert identity.apply(np.asarray([0.3]))[0] == 0.3
    with pytest.raises(ValueError, match="calibration record"):
        Calibration.from_json({"method": "platt", "a": "steep"})


# --- promotion on proper scores ---------------------------------------------------------

GOOD = {"roc_auc": 0.90, "log_loss": 0.20}


@pytest.mark.parametrize(
    ("challenger", "promote", "why"),
    [
        ({"roc_auc": 0.92, "log_loss": 0.20}, True, "ranks better"),
        ({"roc_auc": 0.90, "log_loss": 0.15}, True, "better probabilities"),
        ({"roc_auc": 0.95, "log_loss": 0.40}, False, "worse probabilities (log loss)"),
        ({"roc_auc": 0.85, "log_loss": 0.10}, False, "ranks worse beyond the margin"),
        ({"roc_auc": 0.901, "log_loss": 0.199}, False, "not better by the margin"),
    ],
)
def test_a_challenger_must_not_be_worse_on_ranking_or_on_log_loss(
    challenger: dict[str, float], promote: bool, why: str
) -> None:
    """Better by the margin on ROC-AUC or on log loss, worse beyond it on neither: a
    challenger that ranks better with miscalibrated scores cannot win. The verdict line
    shows both."""
    found = binary_verdict(GOOD, challenger, margin=0.005)
    assert found.promote is promote
    assert why in found.reason
    assert "roc_auc" in found.reason
    assert "log_loss" in found.reason


def test_with_no_champion_a_challenger_with_both_metrics_serves() -> None:
    assert binary_verdict(None, GOOD, margin=0.005).promote
    assert not binary_verdict(None, {"log_loss": 0.2}, margin=0.005).promote


def test_binary_metrics_report_the_mean_score_beside_the_rate_and_the_ece() -> None:
    y = np.asarray([0, 0, 0, 1])
    found = binary_metrics(y, np.asarray([0.1, 0.1, 0.1, 0.7]))
    assert found["mean_score"] == pytest.approx(0.25)
    assert found["positive_rate"] == 0.25
    assert found["ece"] == pytest.approx((3 * 0.1 + 0.3) / 4)


# --- on real data, through the trainer --------------------------------------------------

DIGIT = (
    "type: digit\nid: sample_id\nkey: writer\ntime: arrival\nfields:\n"
    "  sample_id: string\n  writer: string\n"
    + "".join(f"  p{i}: {{type: integer, min: 0, max: 16}}\n" for i in range(64))
    + "labels:\n  nine: boolean\nmodels:\n  - name: nine\n    predicts: {label: nine}\n"
)


def payload(i: int, pixels: np.ndarray) -> dict[str, Any]:
    return {
        "sample_id": f"s-{i:05d}",
        "writer": f"w{i % 20}",
        **{f"p{j}": int(v) for j, v in enumerate(pixels)},
    }


def test_served_scores_on_real_data_are_as_good_and_as_honest_as_a_textbook_baseline(
    tmp_path: Path,
) -> None:
    """Half of the digits as labelled decisions, trained by the trainer; the served model
    then scores the other half. Error at 0.5 within 0.3 points of a plain
    LogisticRegression on the same split, ROC-AUC within 0.01, the mean score within
    20 % of the observed rate."""
    x, digit = load_digits(return_X_y=True)
    y = (digit == 9).astype(int)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    half = len(y) // 2
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "digit.yaml").write_text(DIGIT, encoding="utf-8")
    declarations, problems = load_declarations(tmp_path / "schemas")
    assert problems == []
    declared = model_catalog([declarations["digit"].spec])["digit.nine"]
    at = datetime(2026, 4, 1, tzinfo=UTC)  # no times in the data: all arrive at once
    records = tuple(
        Record(f"s-{i:05d}", "digit", at, payload(i, x[i]), {"nine": bool(y[i])})
        for i in range(half)
    )
    job = TrainJob(
        target="digit.nine",
        trigger="test",
        run_ids={"digit.nine": 1},
        records=records,
        champions={"digit.nine": None},
        models_dir=tmp_path / "models",
        reports_dir=tmp_path / "reports",
        declared={"digit.nine": declared},
        limits=Limits(budget_s=8.0),
    )
    [result] = run_job(job)
    assert result.status == "trained", result.reason
    assert result.promote, result.reason
    assert result.challenger is not None
    assert result.challenger.params["calibration"]["method"] in ("platt", "isotonic")
    assert "ece" in result.challenger_metrics
    served = load_served(tmp_path / "models", result.challenger)
    assert isinstance(served, ServedTabular)
    events = [
        declarations["digit"].model.model_validate(payload(i, x[i])) for i in range(half, len(y))
    ]
    rows = features.Rows(served.numeric, served.categorical).fresh_rows(events, features.History())
    scores, truth = served.proba(rows), y[half:]
    baseline = LogisticRegression(max_iter=5_000).fit(x[:half], y[:half])
    plain = baseline.predict_proba(x[half:])[:, 1]

    def error(p: np.ndarray) -> float:
        return float(np.mean((p >= 0.5) != truth))

    assert error(scores) <= error(plain) + 0.003, (error(scores), error(plain))
    assert roc_auc_score(truth, scores) >= roc_auc_score(truth, plain) - 0.01
    assert abs(scores.mean() - truth.mean()) <= 0.2 * truth.mean(), (scores.mean(), truth.mean())


def test_the_threshold_table_reaches_each_goal_and_prices_the_declared_costs() -> None:
    """On a holdout: the lowest threshold with precision >= 0.8 has it, the highest with
    recall >= 0.8 has it, a review rate flags no more than that share, and declared
    costs give the threshold fp / (fp + fn) with the cost per event counted there."""
    from app.trainer.jobs.evaluate import threshold_table

    rng = np.random.default_rng(9)
    p = rng.random(2_000)
    y = (rng.random(2_000) < p).astype(int)  # calibrated by construction
    rows = {r["goal"]: r for r in threshold_table(y, p, costs=(1.0, 4.0))}
    assert rows["precision >= 0.8"]["precision"] >= 0.8
    assert rows["recall >= 0.8"]["recall"] >= 0.8
    assert rows["review 5% of events"]["flagged"] <= 0.05
    costly = rows["lowest expected cost (false positive 1, false negative 4)"]
    assert costly["threshold"] == 0.2
    acted = p >= 0.2
    expected = (int((acted & (y == 0)).sum()) + 4 * int((~acted & (y == 1)).sum())) / len(y)
    assert costly["cost_per_event"] == pytest.approx(expected, abs=1e-4)
