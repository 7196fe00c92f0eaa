"""The report of one training run: a static HTML page people read instead of numbers.

The trainer calls ``write_report(folder, data)`` at the end of every run, whatever the
decision. The page says first what happened (promoted, kept as challenger, failed) and
why, then the data window, what cleaning removed, the candidates tried, the metrics of
champion and challenger side by side, and the charts (``report_charts.py``), which are
also saved as ``.svg`` files beside the page so a dashboard can link to them. The page
has no scripts and no external resources; it is well-formed XML as well as HTML. Every
file is written to a temporary name and renamed, so a reader never sees half a page.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from app.trainer.report.report_charts import (
    Chart,
    Confusion,
    Curves,
    binary_charts,
    confusion_charts,
    importance_chart,
    model_name,
)

__all__ = ["Confusion", "Curves", "ReportData", "render", "write_report"]

REPORT_FILE = "report.html"
DECISIONS = {"promoted": "Promoted", "kept": "Kept as challenger", "failed": "Failed"}
DASH = "—"
CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif;
  color: #222; margin: 2rem auto; max-width: 1000px; padding: 0 1rem; line-height: 1.4; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; }
.meta { color: #666; margin-top: 0; }
.decision { border: 2px solid #888; border-left-width: 10px; border-radius: 6px;
  padding: 0.6rem 1rem; margin: 1rem 0 1.5rem; background: #f6f6f6; }
.decision h2 { margin: 0 0 0.3rem; font-size: 1.3rem; }
.decision p { margin: 0.2rem 0; font-size: 1.05rem; }
.promoted { border-color: #1a7f37; background: #eefaf0; }
.kept { border-color: #b58100; background: #fff8e5; }
.failed { border-color: #cf222e; background: #fff0f0; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.8rem; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #8a5a00; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; border: 1px solid #e5e5e5; border-radius: 4px; padding: 0.4rem; }
figure svg { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 0.85rem; color: #555; max-width: 460px; }
"""


@dataclass(frozen=True)
class ReportData:
    """Everything one report shows; the trainer fills it at the end of a run."""

    model: str
    run_id: int
    trigger: str
    decision: str  # "promoted" | "kept" | "failed" | ...
    reason: str
    champion_version: int | None
    challenger_version: int | None
    train_window: tuple[str, str]  # ISO timestamps, from and to
    holdout_window: tuple[str, str]
    n_train: int
    n_holdout: int
    cleaning: Mapping[str, int]
    candidates: Sequence[Mapping[str, Any]]  # estimator, params (dict), cv_score, cv_std, seconds
    champion_metrics: Mapping[str, float]
    challenger_metrics: Mapping[str, float]
    curves: Curves | None = None
    importances: Sequence[tuple[str, float]] = ()
    confusions: Sequence[Confusion] = ()
    created_at: str = ""


def write_report(folder: Path, data: ReportData) -> Path:
    """Write ``folder/report.html`` and each chart as ``folder/<name>.svg``; the page's path.

    The charts are written first, so a page never links to a file not yet there.
    """
    folder.mkdir(parents=True, exist_ok=True)
    charts, notes = build_charts(data)
    for chart in charts:
        _write_atomic(folder / chart.file, chart.svg)
    page = folder / REPORT_FILE
    _write_atomic(page, render(data, charts, notes))
    return page


def build_charts(data: ReportData) -> tuple[list[Chart], list[str]]:
    """Every chart the data allows, and a sentence for each one it does not."""
    champion = model_name("champion", data.champion_version)
    challenger = model_name("challenger", data.challenger_version)
    charts: list[Chart] = []
    notes: list[str] = []
    if data.curves is not None:
        charts, notes = binary_charts(data.curves, champion, challenger)
    importance = importance_chart(data.importances)
    if importance is not None:
        charts.append(importance)
    charts.extend(confusion_charts(data.confusions, champion, challenger))
    if not charts and not notes:
        notes.append("No charts: this run produced no holdout predictions to draw.")
    return charts, notes


def render(data: ReportData, charts: Sequence[Chart], notes: Sequence[str]) -> str:
    """The whole page as one string."""
    title = f"{data.model} — training run {data.run_id}"
    meta = [f"trigger: {data.trigger}"]
    if data.created_at:
        meta.append(f"written {data.created_at}")
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{_e(" · ".join(meta))}</p>',
        _decision(data),
        "<h2>Data</h2>",
        _table(
            ["", "from", "to", "rows"],
            [
                ["training", *data.train_window, _count(data.n_train)],
                ["holdout", *data.holdout_window, _count(data.n_holdout)],
            ],
            numeric_from=3,
        ),
        "<h2>Cleaning</h2>",
        _table(["cleaning step", "rows"], [[k, _count(v)] for k, v in data.cleaning.items()])
        if data.cleaning
        else "<p>No cleaning summary was recorded.</p>",
        "<h2>Candidates tried</h2>",
        _candidates(data.candidates),
        "<h2>Metrics on the holdout</h2>",
        _metrics(data),
        "<h2>Charts</h2>",
        *(f'<p class="note">{_e(note)}</p>' for note in notes),
        '<div class="charts">',
        *(
            f"<figure>{chart.svg}<figcaption>{_e(chart.caption)} "
            f'<a href="{_e(chart.file)}">{_e(chart.file)}</a></figcaption></figure>'
            for chart in charts
        ),
        "</div>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
        f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _count(value: int) -> str:
    return f"{value:,}"


def _number(value: Any, digits: int = 4) -> str:
    """Metrics for people: counts whole, rates to ``digits`` decimals, absent as a dash."""
    if value is None:
        return DASH
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, int):
            return _count(value)
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric_from: int = 1) -> str:
    """A table of pre-formatted cells; columns from ``numeric_from`` on align right."""
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        cells = [
            f'<td class="n">{_e(c)}</td>' if i >= numeric_from else f"<td>{_e(c)}</td>"
            for i, c in enumerate(row)
        ]
        out.append(f"<tr>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _decision(data: ReportData) -> str:
    label = DECISIONS.get(data.decision, data.decision.capitalize() or "Unknown")
    css = data.decision if data.decision in DECISIONS else "other"
    versions = (
        f"champion: {_version(data.champion_version)} · "
        f"challenger: {_version(data.challenger_version)}"
    )
    return (
        f'<section class="decision {css}"><h2>{_e(label)}</h2>'
        f"<p>{_e(data.reason)}</p><p>{_e(versions)}</p></section>"
    )


def _version(version: int | None) -> str:
    return "none" if version is None else f"v{version}"


def _candidates(candidates: Sequence[Mapping[str, Any]]) -> str:
    if not candidates:
        return "<p>No candidates were trained.</p>"
    rows = []
    for c in candidates:
        params = c.get("params") or {}
        shown = ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "defaults"
        score, std = c.get("cv_score"), c.get("cv_std")
        cv = DASH if score is None else _number(score) + ("" if std is None else f" ± {std:.4f}")
        seconds = c.get("seconds")
        rows.append(
            [
                str(c.get("estimator", DASH)),
                shown,
                cv,
                DASH if seconds is None else f"{seconds:.1f}",
            ]
        )
    return _table(["estimator", "params", "CV score ± std", "seconds"], rows, numeric_from=2)


def _metrics(data: ReportData) -> str:
    champion, challenger = data.champion_metrics, data.challenger_metrics
    keys = list(dict.fromkeys([*challenger, *champion]))
    if not keys:
        return "<p>No metrics were computed.</p>"
    rows = []
    for key in keys:
        old, new = champion.get(key), challenger.get(key)
        change = DASH if old is None or new is None else f"{new - old:+.4f}"
        rows.append([key, _number(old), _number(new), change])
    head = [
        "metric",
        model_name("champion", data.champion_version),
        model_name("challenger", data.challenger_version),
        "change",
    ]
    return _table(head, rows)


def _write_atomic(path: Path, content: str) -> None:
    """Write ``content`` to a temporary file beside ``path``, then rename it over ``path``."""
    # Not tempfile.mkstemp: its 0600 mode would hide the page from a dashboard process.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("x", encoding="utf-8") as out:
            out.write(content)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
