"""Tests of the training report: the SVG charts (well-formed, escaped, small) and the
page written per run (decision, data, candidates, metrics, charts as files beside it).

Holdouts are seeded samples scored by two made-up models of different quality, so the
curves are real scikit-learn computations over realistic probabilities.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.trainer.report.plots import (
    MAX_BARS,
    MAX_POINTS,
    Series,
    bar_chart,
    heatmap,
    histogram,
    line_chart,
)
from app.trainer.report.report import Confusion, Curves, ReportData, write_report

SVG = "{http://www.w3.org/2000/svg}"
NASTY = 'a<b & "c">'


def texts(svg: str) -> list[str]:
    """Every ``<text>`` of an SVG, as a reader sees it (entities decoded)."""
    return ["".join(t.itertext()) for t in ET.fromstring(svg).iter(f"{SVG}text")]


def holdout(n: int = 2_000, rate: float = 0.1, seed: int = 0) -> Curves:
    """Labels with ``rate`` positives; the challenger separates them better than the champion."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(int)

    def model(strength: float) -> list[float]:
        logits = strength * y + rng.normal(-2.5, 1.0, n)
        return [float(p) for p in 1 / (1 + np.exp(-logits))]

    return Curves(y_true=y.tolist(), champion=model(1.5), challenger=model(3.0))


def report_data(**changes: Any) -> ReportData:
    base = ReportData(
        model="transaction.fraud",
        run_id=12,
        trigger="schedule",
        decision="promoted",
        reason="challenger AUC beats the champion's by more than 0.005 & <more>",
        champion_version=3,
        challenger_version=4,
        train_window=("2026-01-01T00:00:00+00:00", "2026-01-29T00:00:00+00:00"),
        holdout_window=("2026-01-29T00:00:00+00:00", "2026-02-05T00:00:00+00:00"),
        n_train=18_000,
        n_holdout=2_000,
        cleaning={"duplicates": 14, "unlabelled": 230},
        candidates=[
            {
                "estimator": "hgb",
                "params": {"max_depth": 6, "learning_rate": 0.1},
                "cv_score": 0.91,
                "cv_std": 0.012,
                "seconds": 14.2,
            },
            {"estimator": "logreg", "params": {"C": 0.3}, "cv_score": None, "cv_std": None},
        ],
        champion_metrics={"auc": 0.88, "brier": 0.071},
        challenger_metrics={"auc": 0.93, "average_precision": 0.61},
        curves=holdout(),
        importances=[("amount", 0.12), ("channel", 0.04), ("is_night", -0.01)],
        created_at="2026-02-05T01:00:00+00:00",
    )
    return dataclasses.replace(base, **changes)


def page_text(page: Path) -> str:
    """The words of the report page; parsing it also proves it is well-formed."""
    return " ".join(ET.parse(page).getroot().itertext())


CHARTS: dict[str, Callable[[str], str]] = {
    "line": lambda title: line_chart(
        [Series(NASTY, [0, 0.5, 1], [0, 0.7, 1])], title=title, x_label="x", y_label="y"
    ),
    "bar": lambda title: bar_chart([(NASTY, 0.3), ("b", -0.1)], title=title, x_label="weight"),
    "heatmap": lambda title: heatmap(
        [[5, 1], [0, 7]],
        rows=[NASTY, "b"],
        cols=[NASTY, "b"],
        title=title,
        x_label="p",
        y_label="t",
    ),
    "histogram": lambda title: histogram([(NASTY, [0.1, 0.2, 0.2, 0.9])], title=title, x_label="s"),
}


@pytest.mark.parametrize("kind", sorted(CHARTS))
def test_every_chart_is_self_contained_well_formed_svg(kind: str) -> None:
    """Each chart parses as XML, has a fixed viewBox and <title>, and no script or link."""
    svg = CHARTS[kind]("Scores <&> of run 1")
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("viewBox") == "0 0 460 340"
    title = root.find(f"{SVG}title")
    assert title is not None
    assert title.text == "Scores <&> of run 1"
    assert "&lt;&amp;&gt;" in svg
    assert "<script" not in svg
    assert "href" not in svg
    assert "Scores <&> of run 1" in texts(svg)


@pytest.mark.parametrize("kind", ["line", "bar", "histogram"])
def test_legend_names_are_escaped(kind: str) -> None:
    """A series name with markup characters is shown literally in the legend."""
    svg = CHARTS[kind]("t")
    legend = next(g for g in ET.fromstring(svg).iter(f"{SVG}g") if g.get("class") == "legend")
    words = " ".join(legend.itertext()) if kind != "bar" else " ".join(texts(svg))
    assert NASTY in words
    assert "a&lt;b &amp; &quot;c&quot;&gt;" in svg


def test_series_are_downsampled_keeping_both_ends() -> None:
    """A 10,000-point curve is drawn with at most MAX_POINTS points, first and last kept."""
    xs = np.linspace(0, 1, 10_000)
    svg = line_chart([Series("dense", xs, xs**2)], title="t", x_label="x", y_label="y")
    polyline = next(ET.fromstring(svg).iter(f"{SVG}polyline"))
    points = polyline.get("points", "").split()
    assert 2 < len(points) <= MAX_POINTS
    assert points[0] == "62,262"  # (0, 0): bottom-left corner of the plot area
    assert points[-1] == "444,40"  # (1, 1): top-right corner
    assert len(svg) < 20_000


def test_line_chart_drops_non_finite_points_and_draws_the_diagonal() -> None:
    """NaN points are skipped; diagonal=True adds the dashed y = x line to the legend."""
    svg = line_chart(
        [Series("s", [0, 0.5, 1], [0, float("nan"), 1])],
        title="t",
        x_label="x",
        y_label="y",
        diagonal=True,
    )
    polyline = next(ET.fromstring(svg).iter(f"{SVG}polyline"))
    assert len(polyline.get("points", "").split()) == 2
    assert "y = x" in texts(svg)
    with pytest.raises(ValueError, match="as many xs as ys"):
        line_chart([Series("s", [0, 1], [0])], title="t", x_label="x", y_label="y")


def test_bar_chart_draws_negative_values_left_of_the_zero_line() -> None:
    """A positive bar starts at zero and goes right; a negative one ends at zero."""
    root = ET.fromstring(bar_chart([("up", 0.3), ("down", -0.2)], title="t", x_label="v"))
    bars = {
        "".join(r.itertext()).split(":")[0]: r
        for r in root.iter(f"{SVG}rect")
        if r.find(f"{SVG}title") is not None
    }
    up, down = bars["up"], bars["down"]
    zero = float(up.get("x", "nan"))
    assert float(down.get("x", "nan")) + float(down.get("width", "nan")) == pytest.approx(
        zero, abs=0.11
    )
    assert float(up.get("width", "0")) > float(down.get("width", "0")) > 0
    assert {"positive", "negative"} <= set(texts(ET.tostring(root, encoding="unicode")))


def test_bar_chart_keeps_only_the_largest_bars() -> None:
    """Past MAX_BARS items the largest by magnitude are drawn, and the chart says so."""
    items = [(f"f{i}", float(i) * (-1) ** i) for i in range(MAX_BARS + 10)]
    svg = bar_chart(items, title="t", x_label="v")
    assert sum(1 for r in ET.fromstring(svg).iter(f"{SVG}rect") if len(r)) == MAX_BARS
    assert f"largest {MAX_BARS} of {MAX_BARS + 10}" in texts(svg)
    assert "f0" not in texts(svg)


def test_heatmap_prints_each_count_and_checks_its_shape() -> None:
    """Every cell shows its value; a matrix that does not fit the labels is refused."""
    svg = heatmap(
        [[5, 1], [0, 7]], rows=["a", "b"], cols=["a", "b"], title="t", x_label="p", y_label="t"
    )
    assert {"5", "1", "0", "7"} <= set(texts(svg))
    with pytest.raises(ValueError, match="2 x 3 matrix"):
        heatmap(
            [[1, 2], [3, 4]],
            rows=["a", "b"],
            cols=["a", "b", "c"],
            title="t",
            x_label="p",
            y_label="t",
        )


def test_histogram_overlays_series_and_survives_an_empty_one() -> None:
    """Each series gets its own outline; an empty series is listed with n=0, not drawn."""
    svg = histogram([("a", [0.1, 0.2, 0.3]), ("b", [])], bins=5, title="t", x_label="s")
    assert len(list(ET.fromstring(svg).iter(f"{SVG}path"))) == 1
    assert {"a (n=3)", "b (n=0)"} <= set(texts(svg))


def test_write_report_writes_the_page_and_every_chart_beside_it(tmp_path: Path) -> None:
    """report.html plus one parseable .svg per chart, and no temporary file left over."""
    page = write_report(tmp_path / "transaction.fraud" / "run-12", report_data())
    assert page == tmp_path / "transaction.fraud" / "run-12" / "report.html"
    files = {p.name for p in page.parent.iterdir()}
    charts = {"roc.svg", "pr.svg", "calibration.svg", "scores.svg", "importance.svg"}
    assert files == {"report.html", *charts}
    for name in charts:
        assert ET.parse(page.parent / name).getroot().tag == f"{SVG}svg"
        assert f'href="{name}"' in page.read_text()
    write_report(page.parent, report_data(decision="kept"))  # rewriting replaces in place
    assert {p.name for p in page.parent.iterdir()} == files


def test_page_shows_decision_reason_windows_candidates_and_every_metric(tmp_path: Path) -> None:
    """The page states what happened and why, the data, the candidates and all metrics."""
    data = report_data()
    page = write_report(tmp_path, data)
    words = page_text(page)
    html = page.read_text()
    assert "transaction.fraud — training run 12" in words
    assert "Promoted" in words
    assert data.reason in words
    for stamp in (*data.train_window, *data.holdout_window):
        assert stamp in words
    assert "18,000" in words
    assert "2,000" in words
    for key in ("duplicates", "unlabelled", "auc", "brier", "average_precision"):
        assert key in words
    assert "learning_rate=0.1, max_depth=6" in words
    assert "0.9100 ± 0.0120" in words
    assert "logreg" in words
    assert "+0.0500" in words  # auc: challenger minus champion
    assert "<script" not in html
    assert "<link" not in html
    assert "src=" not in html
    assert html.count("<svg") == 5


@pytest.mark.parametrize(
    ("decision", "label"),
    [("promoted", "Promoted"), ("kept", "Kept as challenger"), ("failed", "Failed")],
)
def test_decision_box_names_the_outcome(tmp_path: Path, decision: str, label: str) -> None:
    """The prominent box says promoted, kept as challenger or failed, styled to match."""
    page = write_report(tmp_path, report_data(decision=decision, curves=None))
    box = next(
        s for s in ET.parse(page).getroot().iter("section") if "decision" in s.get("class", "")
    )
    assert box.get("class") == f"decision {decision}"
    assert label in " ".join(box.itertext())


def test_report_without_a_champion_draws_only_the_challenger(tmp_path: Path) -> None:
    """With no champion yet, every curve and legend is the challenger's alone."""
    curves = dataclasses.replace(holdout(), champion=None)
    page = write_report(
        tmp_path, report_data(curves=curves, champion_version=None, champion_metrics={})
    )
    for name in ("roc.svg", "pr.svg", "calibration.svg", "scores.svg"):
        words = texts((tmp_path / name).read_text())
        assert any(w.startswith("challenger v4") for w in words)
        assert not any("champion" in w for w in words)
    roc = ET.parse(tmp_path / "roc.svg").getroot()
    assert len(list(roc.iter(f"{SVG}polyline"))) == 1
    assert "champion: none" in page_text(page)


def test_single_class_holdout_explains_the_missing_curves(tmp_path: Path) -> None:
    """All-negative labels: no ROC or PR (and no exception), a sentence says why."""
    curves = dataclasses.replace(holdout(n=300), y_true=[0] * 300)
    page = write_report(tmp_path, report_data(curves=curves))
    files = {p.name for p in tmp_path.iterdir()}
    assert "roc.svg" not in files
    assert "pr.svg" not in files
    assert {"calibration.svg", "scores.svg"} <= files
    assert "ROC and precision-recall curves are not drawn" in page_text(page)
    assert "all 300 holdout labels are negative" in page_text(page)


def test_inconsistent_curves_are_refused(tmp_path: Path) -> None:
    """Probabilities that do not match the labels are a caller bug, named as such."""
    curves = dataclasses.replace(holdout(n=100), challenger=[0.5] * 99)
    with pytest.raises(ValueError, match="99 probabilities for 100 holdout labels"):
        write_report(tmp_path, report_data(curves=curves))


def test_text_confusions_become_one_heatmap_per_head_and_model(tmp_path: Path) -> None:
    """Each head gets a confusion matrix per model, counts per (true, predicted) cell."""
    urgency = Confusion(
        head="ticket.urgency",
        classes=["low", "high"],
        y_true=["low", "low", "high", "high", "high"],
        champion=["low", "high", "high", "low", "low"],
        challenger=["low", "low", "high", "high", "urgent"],  # a class not listed is kept
    )
    page = write_report(
        tmp_path,
        report_data(
            model="ticket.urgency",
            curves=None,
            importances=(),
            confusions=[urgency],
            champion_metrics={"accuracy": 0.4},
            challenger_metrics={"accuracy": 0.8},
        ),
    )
    files = {p.name for p in tmp_path.iterdir()}
    assert files == {
        "report.html",
        "confusion-ticket-urgency-champion.svg",
        "confusion-ticket-urgency-challenger.svg",
    }
    champion = texts((tmp_path / "confusion-ticket-urgency-champion.svg").read_text())
    assert "ticket.urgency: champion v3, accuracy 0.400" in champion
    challenger = texts((tmp_path / "confusion-ticket-urgency-challenger.svg").read_text())
    assert "urgent" in challenger
    assert "ticket.urgency: challenger v4, accuracy 0.800" in challenger
    assert page.read_text().count("<svg") == 2


def test_a_run_without_charts_says_so(tmp_path: Path) -> None:
    """A failed run with no holdout predictions still gets a page, which says why it is bare."""
    page = write_report(
        tmp_path,
        report_data(
            decision="failed",
            reason="too few labelled outcomes: 12 of the 200 needed",
            curves=None,
            importances=(),
            candidates=[],
            cleaning={},
            champion_metrics={},
            challenger_metrics={},
        ),
    )
    words = page_text(page)
    assert "Failed" in words
    assert "too few labelled outcomes" in words
    assert "No charts" in words
    assert "No candidates were trained." in words
