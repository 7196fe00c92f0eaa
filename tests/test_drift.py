"""Tests of drift measurement: PSI, references built from training rows, their JSON form,
and the comparison of a recent window with them. Real numbers from seeded samples."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from app.inference.features import Row
from app.trainer.jobs.drift import (
    MAX_CATEGORIES,
    PSI_ALERT,
    PSI_NOTICE,
    DriftReference,
    Reference,
    build_reference,
    compare,
    level,
    psi,
)

CHANNELS = ("card_present", "ecommerce", "wallet")


def rows_of(seed: int, n: int = 4_000, *, mean: float = 0.0, web: float = 0.3) -> list[Row]:
    """Rows with a normal ``amount`` and a categorical ``channel`` (``web`` = ecommerce share)."""
    rng = np.random.default_rng(seed)
    amounts = rng.normal(mean, 1.0, n)
    weights = [(1 - web) * 0.7, web, (1 - web) * 0.3]
    channels = rng.choice(CHANNELS, n, p=weights)
    return [{"amount": float(a), "channel": str(c)} for a, c in zip(amounts, channels, strict=True)]


def test_psi_of_identical_shares_is_zero() -> None:
    """The same distribution on both sides has no drift."""
    shares = [0.1, 0.2, 0.3, 0.4]
    assert psi(shares, shares) == pytest.approx(0.0, abs=1e-12)


def test_psi_of_an_empty_bin_is_finite() -> None:
    """A bin empty on one side is floored: a large but finite PSI, never inf or nan."""
    value = psi([0.5, 0.5, 0.0], [0.0, 0.5, 0.5])
    assert math.isfinite(value)
    assert value > PSI_ALERT


def test_psi_refuses_shares_over_different_bins() -> None:
    """Share vectors of different lengths are a bug, reported as such."""
    with pytest.raises(ValueError, match="same bins"):
        psi([0.5, 0.5], [1.0])


def test_same_distribution_resampled_is_stable() -> None:
    """A fresh sample of the training distribution stays below the notice threshold."""
    reference = build_reference(rows_of(1), ["amount", "channel"])
    report = compare(reference, rows_of(2))
    assert set(report.psi) == {"amount", "channel"}
    assert max(report.psi.values()) < PSI_NOTICE
    assert level(max(report.psi.values())) == "stable"


def test_shifted_normal_is_an_alert() -> None:
    """Moving a numeric feature's mean by one standard deviation crosses PSI_ALERT."""
    reference = build_reference(rows_of(1), ["amount", "channel"])
    report = compare(reference, rows_of(2, mean=1.0))
    assert report.psi["amount"] > PSI_ALERT
    assert report.psi["channel"] < PSI_NOTICE
    assert report.worst is not None
    assert report.worst[0] == "amount"
    assert level(report.worst[1]) == "alert"


def test_categorical_shift_is_detected() -> None:
    """ecommerce going from 30 % to 70 % of traffic shows in the channel's PSI."""
    reference = build_reference(rows_of(1), ["amount", "channel"])
    assert reference.features[1].kind == "category"
    report = compare(reference, rows_of(2, web=0.7))
    assert report.psi["channel"] > PSI_ALERT
    assert report.psi["amount"] < PSI_NOTICE


def test_numeric_reference_uses_deduplicated_training_quantiles() -> None:
    """A 0/1 flag gets two edges, not nine; its shares follow the bins then 'missing'."""
    rows: list[Row] = [{"flag": 1.0 if i % 4 == 0 else 0.0} for i in range(100)]
    ref = build_reference(rows, ["flag"]).features[0]
    assert ref.kind == "number"
    assert ref.edges == (0.0, 1.0)
    assert sum(ref.shares) == pytest.approx(1.0)
    assert ref.shares[0] == pytest.approx(0.75)  # zeros fall at (or below) the first edge
    assert ref.shares[-1] == 0.0


def test_rare_categories_count_as_other_and_unseen_ones_too() -> None:
    """Past MAX_CATEGORIES the rarest are 'other'; a category new in the recent window too."""
    rows: list[Row] = [{"shop": f"s{i % (MAX_CATEGORIES + 5)}"} for i in range(1_000)]
    ref = build_reference(rows, ["shop"]).features[0]
    assert len(ref.categories) == MAX_CATEGORIES
    assert ref.shares_of(["never-seen", "never-seen"])[-2] == 1.0  # "other"
    assert ref.shares[-2] > 0


def test_missing_values_and_absent_columns_count_as_missing() -> None:
    """None, a text value in a numeric column and an absent key all land in 'missing'."""
    rows: list[Row] = [{"amount": 1.0}, {"amount": None}, {"amount": 3.0}, {}]
    ref = build_reference(rows, ["amount"]).features[0]
    assert ref.shares[-1] == pytest.approx(0.5)
    assert ref.shares_of(["oops", None, 2.0, math.nan])[-1] == pytest.approx(0.75)
    reference = build_reference(rows_of(1), ["amount", "channel"])
    report = compare(reference, [{"channel": "wallet"}] * 50)  # no "amount" column at all
    assert report.psi["amount"] > PSI_ALERT
    assert report.n == 50


def test_compare_reports_the_label_rate_of_both_windows() -> None:
    """The recent label rate is compared with the training one, alongside the scores' PSI."""
    rng = np.random.default_rng(5)
    train_scores = rng.beta(1, 9, 2_000).tolist()
    reference = build_reference(
        rows_of(1, n=2_000), ["amount"], scores=train_scores, labels=[s > 0.3 for s in train_scores]
    )
    recent_scores = rng.beta(3, 7, 500).tolist()
    report = compare(
        reference,
        rows_of(2, n=500),
        scores=recent_scores,
        labels=[True] * 100 + [False] * 400,
    )
    assert reference.label_rate == pytest.approx(float(np.mean(np.array(train_scores) > 0.3)))
    assert report.reference_label_rate == reference.label_rate
    assert report.label_rate == pytest.approx(0.2)
    assert report.psi["score"] > PSI_ALERT
    assert report.worst is not None
    assert report.worst[0] == "score"


def test_text_heads_are_referenced_by_their_predicted_classes() -> None:
    """String scores (a head's classes) make a categorical score reference; no label rate."""
    train = ["billing"] * 60 + ["technical"] * 40
    reference = build_reference([], [], scores=train)
    assert reference.score is not None
    assert reference.score.kind == "category"
    assert reference.label_rate is None
    assert reference.n == 100
    report = compare(reference, [{}] * 100, scores=["technical"] * 100)
    assert set(report.psi) == {"score"}
    assert report.psi["score"] > PSI_ALERT
    assert report.label_rate is None


def test_a_reference_needs_training_data() -> None:
    """No rows (and no scores to stand in for them) is refused with the reason."""
    with pytest.raises(ValueError, match="needs training rows"):
        build_reference([], ["amount"], scores=[0.5])
    with pytest.raises(ValueError, match="needs training rows"):
        build_reference([], [])


def test_compare_with_no_recent_rows_measures_nothing() -> None:
    """An empty window gives no PSI (not a false alarm) and no worst feature."""
    report = compare(build_reference(rows_of(1, n=100), ["amount"]), [])
    assert report.psi == {}
    assert report.worst is None
    assert report.n == 0


def test_reference_json_round_trips() -> None:
    """to_json is JSON-safe and from_json gives back an equal reference."""
    reference = build_reference(
        rows_of(1, n=500),
        ["amount", "channel"],
        scores=[0.1, 0.9] * 250,
        labels=[True, False] * 250,
    )
    text = json.dumps(reference.to_json(), allow_nan=False)
    assert DriftReference.from_json(json.loads(text)) == reference


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw.pop("features"), "features: expected list"),
        (lambda raw: raw.update(version=99), "version is 99"),
        (lambda raw: raw["features"][0]["shares"].pop(), "amount: 10 shares for 11 bins"),
        (lambda raw: raw["features"][1].update(kind="text"), "kind must be"),
        (lambda raw: raw["features"][0].update(edges=["a"]), r"features\[0\]\.edges"),
        (lambda raw: raw.update(n=True), "n: expected int"),
    ],
)
def test_malformed_reference_json_is_refused_clearly(change: Any, message: str) -> None:
    """A damaged reference raises ValueError naming the field and what to do."""
    raw = build_reference(rows_of(1, n=500), ["amount", "channel"]).to_json()
    change(raw)
    with pytest.raises(ValueError, match=message) as caught:
        DriftReference.from_json(raw)
    assert "retrain the model" in str(caught.value)


def test_reference_checks_its_own_shape() -> None:
    """A Reference whose shares do not fit its bins cannot be built at all."""
    with pytest.raises(ValueError, match="3 shares for 4 bins"):
        Reference("x", "number", (0.0, 1.0), (), (0.5, 0.25, 0.25))
    with pytest.raises(ValueError, match="sum to"):
        Reference("x", "category", (), ("a",), (0.5, 0.1, 0.1))
