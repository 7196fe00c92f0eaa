"""Tests of choosing and judging a challenger: feature selection, the time-budgeted
hyper-parameter search with time-ordered cross-validation, the estimator and fitting
building blocks it uses in ``tabular``, the holdout metrics and the promotion verdict.

Searches run real scikit-learn fits on 2,500 simulator transactions (seed 11); budgets
are either tiny or driven by a fake clock so the file stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss

from app.inference import tabular
from app.inference.features import Row
from app.simulator.generate import training_set
from app.trainer.jobs import fit_tabular
from app.trainer.jobs.dataset import NotEnoughData, sample_weights
from app.trainer.jobs.evaluate import PRIMARY, binary_metrics, multiclass_metrics, verdict
from app.trainer.jobs.search import SPACE, Trial, search, select_features, time_folds
from tests.shipped import CATALOG

TX = CATALOG["transaction.fraud"]
N = 2_500
SEED = 11


@dataclass(frozen=True)
class Data:
    rows: list[Row]
    y: np.ndarray
    weights: np.ndarray
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    x: np.ndarray


@pytest.fixture(scope="module")
def data() -> Data:
    events, labels = training_set("transaction", N, seed=SEED)
    rows = tabular.rows_in_order(TX, events)
    y = np.asarray([int(lb["fraud"]) for lb in labels])
    numeric, categorical = fit_tabular.discover_columns(rows)
    weights = sample_weights(y, [e.occurred_at for e in events], half_life_days=None)
    x = tabular.pipeline_input(rows, numeric, categorical)
    return Data(rows, y, weights, numeric, categorical, x)


class FakeClock:
    """Moves ``step`` seconds every time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


# --- tabular building blocks ----------------------------------------------------------


def test_make_estimator_overrides_defaults_and_refuses_unknown_parameters() -> None:
    """Given params replace the defaults and nothing else; an unknown name is refused
    with the names the estimator takes."""
    hgb = fit_tabular.make_estimator("hgb", 3, max_iter=20, learning_rate=0.15)
    assert (hgb.max_iter, hgb.learning_rate, hgb.max_leaf_nodes) == (20, 0.15, 15)
    assert hgb.random_state == 3
    assert fit_tabular.make_estimator("forest", max_depth=None).max_depth is None
    with pytest.raises(ValueError, match=r"'gamma'.*use any of .*\bC\b") as info:
        fit_tabular.make_estimator("logreg", gamma=1.0, C=2.0)
    assert "max_iter" in str(info.value)


@pytest.mark.parametrize("name", fit_tabular.ESTIMATORS)
def test_first_setting_in_the_search_space_is_todays_default(name: str) -> None:
    """SPACE[estimator][0] is exactly make_estimator's default, and every setting is
    accepted by make_estimator."""
    defaults = fit_tabular.make_estimator(name).get_params()
    assert {k: defaults[k] for k in SPACE[name][0]} == SPACE[name][0]
    for params in SPACE[name]:
        fit_tabular.make_estimator(name, **params)
    assert len({tuple(sorted(p.items(), key=str)) for p in SPACE[name]}) == len(SPACE[name])


def test_fit_rows_equals_fit_on_the_same_rows(data: Data) -> None:
    """fit_rows on fit's training rows, columns and window gives the same model; the
    chosen hyper-parameters are recorded in params (JSON-safe)."""
    events, labels = training_set("transaction", 1_200, seed=SEED + 1)
    whole = fit_tabular.fit(TX, events, labels, estimator="hgb")
    rows = tabular.rows_in_order(TX, events)
    cut = int(len(rows) * (1 - fit_tabular.HOLDOUT_SHARE))
    y = np.asarray([int(lb["fraud"]) for lb in labels])
    numeric, categorical = fit_tabular.discover_columns(rows[:cut])
    part = fit_tabular.fit_rows(
        TX,
        rows[:cut],
        y[:cut],
        numeric=numeric,
        categorical=categorical,
        estimator="hgb",
        window=whole.window,
    )
    assert (part.numeric, part.categorical, part.features) == (
        whole.numeric,
        whole.categorical,
        whole.features,
    )
    assert (part.means, part.reference) == (whole.means, whole.reference)
    assert part.metrics == {}
    assert {"roc_auc", "pr_auc", "brier", "log_loss"} <= set(whole.metrics)
    later = tabular.pipeline_input(rows[cut:], numeric, categorical)
    np.testing.assert_array_equal(
        part.pipeline.predict_proba(later), whole.pipeline.predict_proba(later)
    )
    assert whole.params["estimator_params"] == {}

    tuned = fit_tabular.fit_rows(
        TX,
        data.rows[:800],
        data.y[:800],
        numeric=data.numeric,
        categorical=data.categorical,
        estimator="forest",
        params={"n_estimators": np.int64(10), "max_depth": None},
        window=("a", "b"),
    )
    assert tuned.pipeline.named_steps["model"].n_estimators == 10
    assert tuned.params["estimator_params"] == {"n_estimators": 10, "max_depth": None}
    assert type(tuned.params["estimator_params"]["n_estimators"]) is int


# --- feature selection ----------------------------------------------------------------


def with_noise(rows: list[Row]) -> list[Row]:
    """Each row with a noise number, a noise small count and a noise category."""
    rng = np.random.default_rng(0)
    return [
        {
            **row,
            "attr.noise": float(rng.random()),
            "attr.noise_count": float(rng.integers(10)),
            "attr.noise_kind": f"k{rng.integers(30)}",
        }
        for row in rows
    ]


def test_select_features_keeps_the_signals_and_drops_pure_noise(data: Data) -> None:
    """Planted fraud signals are kept; columns of random noise score under min_score and
    are dropped; kept columns stay in their original order."""
    numeric = (*data.numeric, "attr.noise", "attr.noise_count")
    categorical = (*data.categorical, "attr.noise_kind")
    chosen = select_features(with_noise(data.rows), data.y, numeric, categorical)
    assert set(chosen.dropped) >= {"attr.noise", "attr.noise_count", "attr.noise_kind"}
    planted = {"amount", "differs(country,card_country)", "device.is_new"}
    assert planted <= set(chosen.numeric)
    assert list(chosen.numeric) == [c for c in numeric if c in chosen.numeric]
    assert set(chosen.scores) == {*numeric, *categorical}
    assert set(chosen.numeric) | set(chosen.categorical) | set(chosen.dropped) == set(chosen.scores)


def test_select_features_caps_the_count_and_never_returns_nothing(data: Data) -> None:
    """max_features keeps the best ones; an unreachable min_score still keeps the best."""
    top = select_features(data.rows, data.y, data.numeric, data.categorical, max_features=3)
    kept = [*top.numeric, *top.categorical]
    assert len(kept) == 3
    assert sorted(top.scores.values(), reverse=True)[:3] == sorted(
        (top.scores[c] for c in kept), reverse=True
    )
    best = select_features(
        data.rows, data.y, data.numeric, data.categorical, min_score=10.0, min_importance=10.0
    )
    assert [*best.numeric, *best.categorical] == [max(best.scores, key=best.scores.__getitem__)]


# --- search ---------------------------------------------------------------------------


def test_time_folds_always_validate_on_later_rows_than_they_train_on() -> None:
    """Every fold trains on rows before its validation rows (at most max_fit_rows, the
    most recent), and validation parts tile the later rows in order."""
    folds = time_folds(1_000, 3, max_fit_rows=300)
    assert len(folds) == 3
    for train, val in folds:
        assert train.max() < val.min()
        assert len(train) <= 300
        assert train[-1] == val[0] - 1
        assert np.all(np.diff(val) == 1)
    assert np.concatenate([val for _, val in folds]).tolist() == list(range(250, 1_000))


def test_search_tries_every_family_first_and_picks_a_good_model(data: Data) -> None:
    """Each estimator's default runs first (in the order given), the best trial has the
    highest CV score and separates fraud well, and each trial is reported as it ends."""
    seen: list[Trial] = []
    found = search(
        data.x,
        data.y,
        data.weights,
        data.numeric,
        data.categorical,
        budget_s=2.5,
        on_trial=seen.append,
    )
    assert [(t.estimator, t.params) for t in found.trials[:3]] == [
        ("logreg", SPACE["logreg"][0]),
        ("hgb", SPACE["hgb"][0]),
        ("forest", SPACE["forest"][0]),
    ]
    assert list(found.trials) == seen
    assert found.best.cv_score == max(t.cv_score for t in found.trials)
    assert found.best.cv_score > 0.8
    assert all(t.folds == 3 and t.cv_std >= 0 for t in found.trials)
    assert len(found.trials) < sum(len(s) for s in SPACE.values())
    assert found.stopped_by_budget
    assert found.best.as_dict()["cv_score"] == found.best.cv_score


def test_search_stops_when_a_tiny_budget_is_spent(data: Data) -> None:
    """With a clock that moves 1 s per read and a 2 s budget, the defaults of every
    family still run and nothing else does."""
    found = search(
        data.x,
        data.y,
        data.weights,
        data.numeric,
        data.categorical,
        budget_s=2.0,
        clock=FakeClock(1.0),
    )
    assert [t.estimator for t in found.trials] == ["logreg", "hgb", "forest"]
    assert found.stopped_by_budget
    assert found.spent_s > found.budget_s


def test_search_skips_a_setting_its_estimate_says_would_overrun(data: Data) -> None:
    """After one 1 s trial, a next one that would end past the deadline is not started
    even though budget remains; with enough budget every setting runs."""
    tight = search(
        data.x,
        data.y,
        data.weights,
        data.numeric,
        data.categorical,
        estimators=("logreg",),
        budget_s=3.5,  # reads: start 1, trial 2-3, check at 4 < 4.5 but 4 + 1 > 4.5
        clock=FakeClock(1.0),
    )
    assert len(tight.trials) == 1
    assert tight.stopped_by_budget
    roomy = search(
        data.x[:1_200],
        data.y[:1_200],
        data.weights[:1_200],
        data.numeric,
        data.categorical,
        estimators=("logreg",),
        budget_s=100.0,
        clock=FakeClock(1.0),
        seed=4,
    )
    assert len(roomy.trials) == len(SPACE["logreg"])
    assert not roomy.stopped_by_budget
    assert sorted(t.params["C"] for t in roomy.trials) == [0.1, 0.3, 1.0, 3.0, 10.0]


def test_search_skips_folds_with_one_outcome_and_refuses_when_none_is_left(
    data: Data,
) -> None:
    """A fold whose validation holds no positive is not scored; when no fold can be, the
    search says there is not enough data."""
    x, w = data.x[:800], data.weights[:800]
    y = data.y[:800].copy()
    y[200:400] = 0  # the first fold validates on rows 200-399
    found = search(x, y, w, data.numeric, data.categorical, estimators=("logreg",), budget_s=0)
    assert found.best.folds == 2
    early_only = np.zeros(800, dtype=int)
    early_only[:50] = 1
    with pytest.raises(NotEnoughData, match="folds"):
        search(x, early_only, w, data.numeric, data.categorical, estimators=("logreg",))


def test_search_refuses_unknown_estimators_and_mismatched_inputs(data: Data) -> None:
    """Bad arguments are refused before any fit."""
    with pytest.raises(ValueError, match="svm"):
        search(data.x, data.y, data.weights, data.numeric, data.categorical, estimators=["svm"])
    with pytest.raises(ValueError, match="weights"):
        search(data.x, data.y, data.weights[:10], data.numeric, data.categorical)


# --- evaluate -------------------------------------------------------------------------

Y = [1, 0, 0, 1, 0, 0, 0, 0, 0, 0]
P = np.asarray([0.9, 0.8, 0.1, 0.35, 0.3, 0.2, 0.05, 0.15, 0.25, 0.4])


def test_binary_metrics_on_a_hand_worked_example() -> None:
    """Scores ranked 0.9(+) 0.8 0.4 0.35(+) ...: AUC 14/16, AP (1 + 2/4)/2, and analysts
    reviewing the top 20 % (2 rows) catch one of the two positives, 40 % catch both."""
    found = binary_metrics(Y, P, review_rate=0.2)
    y = np.asarray(Y)
    assert found["roc_auc"] == pytest.approx(14 / 16)
    assert found["pr_auc"] == pytest.approx(0.75)
    assert found["caught_at_review"] == 0.5
    assert (found["review_rate"], found["positive_rate"], found["n"]) == (0.2, 0.2, 10)
    assert found["brier"] == pytest.approx(float(np.mean((P - y) ** 2)))
    expected = -np.mean(y * np.log(P) + (1 - y) * np.log(1 - P))
    assert found["log_loss"] == pytest.approx(float(expected))
    assert binary_metrics(Y, P, review_rate=0.4)["caught_at_review"] == 1.0
    assert binary_metrics(Y, P)["caught_at_review"] == 0.5  # 5 % of 10 rows: the top one


def test_binary_metrics_leave_out_ranking_metrics_with_one_outcome() -> None:
    """No positives: no roc_auc, pr_auc or caught_at_review; the rest is measured."""
    found = binary_metrics([0, 0, 0], np.asarray([0.1, 0.2, 0.3]))
    assert not {"roc_auc", "pr_auc", "caught_at_review"} & set(found)
    assert found["positive_rate"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        binary_metrics([0, 1], np.asarray([0.5]))


def test_multiclass_metrics_on_known_inputs() -> None:
    """Three of four right; per-class F1 0.8, 1 and 0 average to 0.6; log loss equals
    scikit-learn's."""
    classes = ["a", "b", "c"]
    truth = ["a", "b", "c", "a"]
    proba = np.asarray([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.3, 0.2], [0.6, 0.3, 0.1]])
    found = multiclass_metrics(truth, proba, classes)
    assert found["accuracy"] == 0.75
    assert found["macro_f1"] == pytest.approx(0.6)
    assert found["log_loss"] == pytest.approx(sk_log_loss(truth, proba, labels=classes))
    assert found["n"] == 4


def test_multiclass_metrics_count_an_unknown_true_label_as_wrong() -> None:
    """A true label the model has no class for is a miss with (clipped) zero probability,
    not an error."""
    found = multiclass_metrics(["a", "z"], np.asarray([[0.9, 0.1], [0.5, 0.5]]), ["a", "b"])
    assert found["accuracy"] == 0.5
    assert found["macro_f1"] == pytest.approx(2 / 3)  # class a: one right, one false alarm
    eps = np.finfo(np.float64).eps
    assert found["log_loss"] == pytest.approx((-math.log(0.9) - math.log(eps)) / 2)


def test_verdict_promotes_only_when_better_by_the_margin() -> None:
    """Better by the margin or more promotes; within the margin or worse keeps the
    champion; each reason quotes both numbers."""
    champion = {"roc_auc": 0.874}
    better = verdict(champion, {"roc_auc": 0.912}, metric="roc_auc", margin=0.005)
    assert better.promote
    assert (
        better.reason == "roc_auc 0.912 vs champion 0.874: better by 0.038 (margin 0.005): promote"
    )
    assert (better.champion, better.challenger, better.margin) == (0.874, 0.912, 0.005)
    exactly = verdict(champion, {"roc_auc": 0.879}, metric="roc_auc", margin=0.005)
    assert exactly.promote
    within = verdict(champion, {"roc_auc": 0.876}, metric="roc_auc", margin=0.005)
    assert not within.promote
    assert "0.876 vs champion 0.874" in within.reason
    assert "under the margin" in within.reason
    worse = verdict(champion, {"roc_auc": 0.85}, metric="roc_auc", margin=0.005)
    assert not worse.promote
    assert "worse by 0.024" in worse.reason


def test_verdict_without_a_comparable_champion_or_challenger() -> None:
    """No champion, or one without the metric, promotes; a challenger without the metric
    keeps the champion; for log loss lower is better."""
    alone = verdict(None, {"macro_f1": 0.7}, metric=PRIMARY["multiclass"], margin=0.01)
    assert alone.promote
    assert "no champion" in alone.reason
    assert alone.champion is None
    unmeasured = verdict({"brier": 0.1}, {"roc_auc": 0.8}, metric="roc_auc", margin=0.0)
    assert unmeasured.promote
    assert "champion has no roc_auc" in unmeasured.reason
    blind = verdict({"roc_auc": 0.8}, {"brier": 0.1}, metric=PRIMARY["binary"], margin=0.0)
    assert not blind.promote
    assert "challenger has no roc_auc" in blind.reason
    lower = verdict({"log_loss": 0.30}, {"log_loss": 0.25}, metric="log_loss", margin=0.01)
    assert lower.promote
    assert "better by 0.050" in lower.reason


def test_a_column_useful_only_beside_another_is_kept_and_pure_noise_is_dropped() -> None:
    """``a`` says nothing alone (independent of the outcome) but with ``b`` it gives
    ``b - a``, which decides it: the shuffle test of a model of all columns keeps it
    (the textbook confounding case). Pure noise is dropped, unless forced in."""
    rng = np.random.default_rng(5)
    n = 4_000
    a = rng.normal(0, 3, n)
    gap = rng.normal(0, 1, n)
    b = a + gap
    y = (gap + rng.normal(0, 0.2, n) > 0.5).astype(int)
    noise = rng.normal(size=n)
    kinds = rng.choice(["x", "y"], n)
    rows: list[Row] = [
        {"a": float(a[i]), "b": float(b[i]), "noise": float(noise[i]), "kind": str(kinds[i])}
        for i in range(n)
    ]
    chosen = select_features(rows, y, ["a", "b", "noise"], ["kind"])
    # Alone it carries (next to) no information; beside b it decides.
    assert chosen.scores["a"] < chosen.scores["b"]
    assert chosen.importance["a"] > 0.05, chosen.importance
    assert {"a", "b"} <= set(chosen.numeric)
    assert {"noise", "kind"} <= set(chosen.dropped)
    forced = select_features(rows, y, ["a", "b", "noise"], ["kind"], forced=["noise"])
    assert "noise" in forced.numeric
