"""SVG drawing primitives shared by the training-report charts (``plots.py``).

Strings in, strings out: every function returns a fragment of SVG markup, with text
XML-escaped, so a chart is a list of fragments joined inside ``document``. Nothing here
knows about models or metrics. All charts share one canvas size (``WIDTH`` x ``HEIGHT``)
so a report lays them out on a grid without scaling surprises.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 460
HEIGHT = 340
FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"
CHAR_WIDTH = 6.2  # average glyph width at font-size 11, for layout estimates only
GRID = "#e3e3e3"
AXIS = "#555555"
INK = "#222222"
# Okabe-Ito: distinct for the common kinds of colour blindness, and in greyscale print.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
REFERENCE = "#888888"


def esc(text: object) -> str:
    """``text`` safe inside an XML element or a double-quoted attribute."""
    return escape(str(text), quote=True)


def num(value: float) -> str:
    """A coordinate, rounded to a tenth of a pixel (keeps files small)."""
    return f"{value:.1f}".removesuffix(".0")


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (labels must fit the canvas)."""
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + "…"


def label_value(value: float) -> str:
    """A value for people: whole numbers as such, others to three significant digits."""
    if math.isfinite(value) and value == round(value) and abs(value) < 1e9:
        return str(round(value))
    return f"{value:.3g}"


def document(title: str, body: Iterable[str]) -> str:
    """A standalone SVG: fixed viewBox, white background, ``<title>`` for screen readers."""
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{esc(title)}" '
        f'font-family="{esc(FONT)}" font-size="11" fill="{INK}">'
        f"<title>{esc(title)}</title>"
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>'
        f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="14" '
        f'font-weight="600">{esc(shorten(title, 60))}</text>'
    )
    return head + "".join(body) + "</svg>"


def text(
    x: float, y: float, content: str, *, anchor: str = "middle", size: int = 11, extra: str = ""
) -> str:
    """One line of text; ``extra`` carries further (already escaped) attributes."""
    attrs = f' font-size="{size}"' if size != 11 else ""
    return (
        f'<text x="{num(x)}" y="{num(y)}" text-anchor="{anchor}"{attrs}{extra}>'
        f"{esc(content)}</text>"
    )


def line(x1: float, y1: float, x2: float, y2: float, stroke: str, extra: str = "") -> str:
    """A straight segment."""
    return (
        f'<line x1="{num(x1)}" y1="{num(y1)}" x2="{num(x2)}" y2="{num(y2)}" '
        f'stroke="{stroke}"{extra}/>'
    )


@dataclass(frozen=True)
class Scale:
    """Maps data values in ``[lo, hi]`` onto pixels ``[start, end]``, clamping outliers."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = self.hi - self.lo
        t = (value - self.lo) / span if span else 0.5
        return self.start + min(max(t, 0.0), 1.0) * (self.end - self.start)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[tuple[float, str]]:
    """About ``count`` round tick values inside ``[lo, hi]``, each with its label."""
    if not hi > lo:
        return [(lo, label_value(lo))]
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = magnitude * 10
    for multiple in (1.0, 2.0, 2.5, 5.0, 10.0):
        if (hi - lo) / (multiple * magnitude) <= count:
            step = multiple * magnitude
            break
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if round(step / 10**-decimals, 6) % 1:  # 2.5, 0.25 ... need one more digit
        decimals += 1
    first = math.ceil(lo / step - 1e-9)
    ticks: list[tuple[float, str]] = []
    for i in range(first, math.floor(hi / step + 1e-9) + 1):
        value = round(i * step, 12) + 0.0  # + 0.0 turns -0.0 into 0.0
        ticks.append((value, f"{value:.{decimals}f}"))
    return ticks


def nice_range(lo: float, hi: float) -> tuple[float, float]:
    """``[lo, hi]`` widened to the nearest round ticks (and to a real span when empty)."""
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    ticks = nice_ticks(lo, hi)
    step = ticks[1][0] - ticks[0][0] if len(ticks) > 1 else hi - lo
    low = ticks[0][0] if ticks[0][0] <= lo else ticks[0][0] - step
    high = ticks[-1][0] if ticks[-1][0] >= hi else ticks[-1][0] + step
    return low, high


def x_axis(scale: Scale, y: float, top: float, label: str) -> list[str]:
    """Vertical grid lines, tick labels under ``y`` and the axis label below them."""
    parts = []
    for value, tick in nice_ticks(scale.lo, scale.hi):
        x = scale(value)
        parts.append(line(x, top, x, y, GRID))
        parts.append(text(x, y + 15, tick))
    parts.append(line(scale.start, y, scale.end, y, AXIS))
    parts.append(text((scale.start + scale.end) / 2, y + 33, label, size=12))
    return parts


def y_axis(scale: Scale, x: float, right: float, label: str) -> list[str]:
    """Horizontal grid lines, tick labels left of ``x`` and the rotated axis label."""
    parts = []
    for value, tick in nice_ticks(scale.lo, scale.hi):
        y = scale(value)
        parts.append(line(x, y, right, y, GRID))
        parts.append(text(x - 6, y + 4, tick, anchor="end"))
    parts.append(line(x, scale.start, x, scale.end, AXIS))
    middle = (scale.start + scale.end) / 2
    parts.append(
        text(16, middle, label, size=12, extra=f' transform="rotate(-90 16 {num(middle)})"')
    )
    return parts


@dataclass(frozen=True)
class Key:
    """One legend entry: a name and how its series looks."""

    name: str
    colour: str
    dashed: bool = False
    box: bool = False  # a filled square (bars, cells) instead of a line sample


def legend(keys: Sequence[Key], *, y: float, left: float = 20, right: float = WIDTH - 20) -> str:
    """Legend entries in rows from ``(left, y)``, wrapping before ``right``."""
    parts = ['<g class="legend">']
    x, row_y = left, y
    for key in keys:
        name = shorten(key.name, 40)
        width = 26 + len(name) * CHAR_WIDTH + 14
        if x > left and x + width > right:
            x, row_y = left, row_y + 15
        if key.box:
            parts.append(
                f'<rect x="{num(x + 4)}" y="{num(row_y - 9)}" width="12" height="10" '
                f'fill="{key.colour}"/>'
            )
        else:
            dash = ' stroke-dasharray="5 3"' if key.dashed else ""
            parts.append(
                line(x, row_y - 4, x + 20, row_y - 4, key.colour, f' stroke-width="2"{dash}')
            )
        parts.append(text(x + 26, row_y, name, anchor="start"))
        x += width
    parts.append("</g>")
    return "".join(parts)
