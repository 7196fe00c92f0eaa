"""Charts for the training report: plain data in, a self-contained SVG string out.

Each function draws one chart on the shared 460 x 340 canvas (``svg.py``): no scripts,
no external references, every text XML-escaped, a ``<title>`` for screen readers, axis
ticks, axis labels and a legend. The report (``report.py``) inlines the strings in its
page and also writes each as its own ``.svg`` file. Series are downsampled to
``MAX_POINTS`` so a curve over a million holdout rows still makes a small file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from app.trainer.report.svg import (
    AXIS,
    CHAR_WIDTH,
    PALETTE,
    REFERENCE,
    Key,
    Scale,
    document,
    esc,
    label_value,
    legend,
    line,
    nice_range,
    num,
    shorten,
    text,
    x_axis,
    y_axis,
)

MAX_POINTS = 400
MAX_BARS = 20
MARKER_LIMIT = 30  # series this short get a dot per point (calibration bins, a lone point)
LEFT, RIGHT, TOP, BOTTOM = 62.0, 444.0, 40.0, 262.0
LEGEND_Y = 318.0
Floats = npt.NDArray[np.float64]
Values = Sequence[float] | npt.NDArray[np.floating[Any]]  # sklearn's curves are arrays


@dataclass(frozen=True)
class Series:
    """One named curve; ``dashed`` for reference lines (a baseline, a chance level)."""

    name: str
    xs: Values
    ys: Values
    dashed: bool = False


def downsample(xs: Values, ys: Values) -> tuple[Floats, Floats]:
    """The finite points of a series, at most ``MAX_POINTS``, first and last always kept."""
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"a series needs as many xs as ys, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) > MAX_POINTS:
        index = np.unique(np.linspace(0, len(x) - 1, MAX_POINTS).round().astype(np.int64))
        x, y = x[index], y[index]
    return x, y


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_range: tuple[float, float] = (0.0, 1.0),
    y_range: tuple[float, float] = (0.0, 1.0),
    diagonal: bool = False,
) -> str:
    """Curves over fixed axes (ROC, precision-recall, reliability); values outside clamp.

    ``diagonal`` adds the dashed y = x reference: chance for ROC, perfect calibration
    for a reliability diagram.
    """
    sx, sy = Scale(*x_range, LEFT, RIGHT), Scale(*y_range, BOTTOM, TOP)
    parts = [*x_axis(sx, BOTTOM, TOP, x_label), *y_axis(sy, LEFT, RIGHT, y_label)]
    keys: list[Key] = []
    if diagonal:
        low, high = max(x_range[0], y_range[0]), min(x_range[1], y_range[1])
        parts.append(
            line(sx(low), sy(low), sx(high), sy(high), REFERENCE, ' stroke-dasharray="5 3"')
        )
    for i, one in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        xs, ys = downsample(one.xs, one.ys)
        points = " ".join(f"{num(sx(x))},{num(sy(y))}" for x, y in zip(xs, ys, strict=True))
        dash = ' stroke-dasharray="6 4"' if one.dashed else ""
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"'
            f' stroke-linejoin="round"{dash}><title>{esc(one.name)}</title></polyline>'
        )
        if len(xs) <= MARKER_LIMIT and not one.dashed:
            parts.extend(
                f'<circle cx="{num(sx(x))}" cy="{num(sy(y))}" r="2.8" fill="{colour}"/>'
                for x, y in zip(xs, ys, strict=True)
            )
        keys.append(Key(one.name, colour, dashed=one.dashed))
    if diagonal:
        keys.append(Key("y = x", REFERENCE, dashed=True))
    parts.append(legend(keys, y=LEGEND_Y))
    return document(title, parts)


def bar_chart(items: Sequence[tuple[str, float]], *, title: str, x_label: str) -> str:
    """Horizontal bars in the given order (feature importances), negatives left of zero.

    Past ``MAX_BARS`` items only the largest by magnitude are drawn, and a note says so.
    """
    shown = list(items)
    if len(shown) > MAX_BARS:
        largest = sorted(range(len(shown)), key=lambda i: -abs(shown[i][1]))[:MAX_BARS]
        shown = [shown[i] for i in sorted(largest)]
    values = [value for _, value in shown]
    low, high = min([0.0, *values]), max([0.0, *values])
    pad = (high - low) * 0.18 or 1.0  # room for the value printed at each bar's end
    low, high = nice_range(low - pad if low < 0 else 0.0, high + pad if high > 0 else 0.0)
    label_width = min(150.0, max((len(name) for name, _ in shown), default=1) * CHAR_WIDTH + 12)
    left, bottom = 20.0 + label_width, 270.0
    sx = Scale(low, high, left, RIGHT)
    parts = x_axis(sx, bottom, TOP, x_label)
    if len(items) > len(shown):
        parts.append(
            text(RIGHT, 36, f"largest {len(shown)} of {len(items)}", anchor="end", size=10)
        )
    slot = (bottom - TOP) / max(len(shown), 1)
    height = min(18.0, slot * 0.72)
    size = 11 if slot >= 14 else 10
    zero = sx(0.0)
    for i, (name, value) in enumerate(shown):
        colour = PALETTE[0] if value >= 0 else PALETTE[1]
        middle = TOP + slot * (i + 0.5)
        end = sx(value)
        parts.append(
            f'<rect x="{num(min(zero, end))}" y="{num(middle - height / 2)}" '
            f'width="{num(abs(end - zero))}" height="{num(height)}" fill="{colour}">'
            f"<title>{esc(name)}: {esc(label_value(value))}</title></rect>"
        )
        parts.append(text(left - 6, middle + 4, shorten(name, 22), anchor="end", size=size))
        beside, side = (end + 4, "start") if value >= 0 else (end - 4, "end")
        parts.append(text(beside, middle + 4, label_value(value), anchor=side, size=size))
    parts.append(line(zero, TOP, zero, bottom, AXIS, ' stroke-width="1.5"'))
    keys = [Key("positive", PALETTE[0], box=True)]
    if any(value < 0 for value in values):
        keys.append(Key("negative", PALETTE[1], box=True))
    parts.append(legend(keys, y=326))
    return document(title, parts)


def _cell_colour(t: float) -> str:
    """White to deep blue as ``t`` goes from 0 to 1."""
    start, end = (247, 251, 255), (8, 69, 148)
    r, g, b = (round(a + (z - a) * t) for a, z in zip(start, end, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(
    matrix: Sequence[Sequence[float]],
    *,
    rows: Sequence[str],
    cols: Sequence[str],
    title: str,
    x_label: str,
    y_label: str,
) -> str:
    """A grid of shaded cells with the value printed in each (a confusion matrix)."""
    try:
        grid = np.asarray(matrix, dtype=np.float64)
    except ValueError:  # ragged rows
        grid = np.empty(0)
    if not rows or not cols or grid.shape != (len(rows), len(cols)):
        raise ValueError(
            f"heatmap needs a non-empty {len(rows)} x {len(cols)} matrix, one row per row "
            f"label and one column per column label; got shape {grid.shape}"
        )
    top_value = float(grid.max()) if grid.size and grid.max() > 0 else 1.0
    label_width = min(100.0, max(len(r) for r in rows) * CHAR_WIDTH + 10)
    left, right, bottom = 30.0 + label_width, 396.0, 236.0
    cw, ch = (right - left) / len(cols), (bottom - TOP) / len(rows)
    parts: list[str] = []
    for i, row_name in enumerate(rows):
        y = TOP + ch * i
        parts.append(text(left - 6, y + ch / 2 + 4, shorten(row_name, 16), anchor="end"))
        for j, value in enumerate(grid[i]):
            t = float(value) / top_value
            x = left + cw * j
            shown = label_value(float(value))
            size = int(max(7.0, min(12.0, ch * 0.45, cw / (len(shown) * 0.62 + 0.5))))
            parts.append(
                f'<rect x="{num(x)}" y="{num(y)}" width="{num(cw)}" height="{num(ch)}" '
                f'fill="{_cell_colour(t)}" stroke="#ffffff"><title>{esc(row_name)} → '
                f"{esc(cols[j])}: {esc(shown)}</title></rect>"
            )
            colour = ' fill="#ffffff"' if t > 0.55 else ""
            parts.append(text(x + cw / 2, y + ch / 2 + size * 0.36, shown, size=size, extra=colour))
    angle = 35 if len(cols) <= 5 else 55  # steeper when narrow columns crowd the labels
    for j, col_name in enumerate(cols):
        x = left + cw * (j + 0.5)
        parts.append(
            text(
                x,
                bottom + 12,
                shorten(col_name, 12),
                anchor="end",
                extra=f' transform="rotate(-{angle} {num(x)} {num(bottom + 12)})"',
            )
        )
    middle = (TOP + bottom) / 2
    parts.append(text((left + right) / 2, 330, x_label, size=12))
    parts.append(text(16, middle, y_label, size=12, extra=f' transform="rotate(-90 16 {middle})"'))
    steps = 6
    for k in range(steps):  # the colour key: darkest at the top, like a y axis
        parts.append(
            f'<rect x="410" y="{num(TOP + k * (bottom - TOP) / steps)}" width="12" '
            f'height="{num((bottom - TOP) / steps)}" fill="{_cell_colour(1 - k / (steps - 1))}"/>'
        )
    parts.append(f'<g class="legend">{text(426, TOP + 9, label_value(top_value), anchor="start")}')
    parts.append(f"{text(426, bottom, '0', anchor='start')}</g>")
    return document(title, parts)


def histogram(
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    bins: int = 20,
    title: str,
    x_label: str,
    x_range: tuple[float, float] | None = None,
) -> str:
    """Overlaid outlined histograms on shared bins, each as its share of its own values.

    Shares (not counts) let series of different sizes be compared. Bins span ``x_range``
    (values outside count in the end bins) or else the finite values of all series.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    values = [np.asarray(v, dtype=np.float64) for _, v in series]
    values = [v[np.isfinite(v)] for v in values]
    everything = np.concatenate([*values, np.empty(0)])
    if x_range is not None:
        lo, hi = x_range
    else:
        lo, hi = (float(everything.min()), float(everything.max())) if everything.size else (0, 1)
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    shares = [
        np.histogram(np.clip(v, edges[0], edges[-1]), bins=edges)[0] / max(v.size, 1)
        for v in values
    ]
    top = max([float(s.max()) for s in shares if s.size] + [0.0])
    sx = Scale(lo, hi, LEFT, RIGHT)
    sy = Scale(*nice_range(0.0, top * 1.05 if top else 1.0), BOTTOM, TOP)
    parts = [*x_axis(sx, BOTTOM, TOP, x_label), *y_axis(sy, LEFT, RIGHT, "share")]
    keys: list[Key] = []
    for i, ((name, _), share, v) in enumerate(zip(series, shares, values, strict=True)):
        colour = PALETTE[i % len(PALETTE)]
        keys.append(Key(f"{name} (n={v.size})", colour))
        if not v.size:
            continue
        path = [f"M{num(sx(edges[0]))},{num(sy(0.0))}"]
        for k, s in enumerate(share):
            path.append(f"L{num(sx(edges[k]))},{num(sy(s))}L{num(sx(edges[k + 1]))},{num(sy(s))}")
        path.append(f"L{num(sx(edges[-1]))},{num(sy(0.0))}")
        parts.append(
            f'<path d="{"".join(path)}" fill="{colour}" fill-opacity="0.12" stroke="{colour}" '
            f'stroke-width="2" stroke-linejoin="round"><title>{esc(name)}</title></path>'
        )
    parts.append(legend(keys, y=LEGEND_Y))
    return document(title, parts)
