"""Reason sentences with field interpolation: ``"Amount {amount} {currency} is over 3x
the average ({attributes.avg_amount})"``, ``{scores.fraud:.3f}``, ``{windows.tx_10m}``.

Templates are parsed with ``string.Formatter().parse`` only (never ``format``/``format_map``
on user text, so no attribute or item lookups run). Each placeholder is a dotted path
and an optional format spec; rendering applies ``format()`` to the scalar alone.
Defaults: floats get 2 decimals, booleans read ``true``/``false``; a missing value (or
one the spec does not fit) renders as ``?``. ``{{`` and ``}}`` are literal braces.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MISSING = "?"
_PATH_RE = re.compile(r"^[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*$")
_SPEC_RE = re.compile(r"^[<>=^+\- #0-9,._a-zA-Z%]{0,20}$")


@dataclass(frozen=True)
class Placeholder:
    path: str
    spec: str


@dataclass(frozen=True)
class Template:
    """Literal text and placeholders, in order."""

    parts: tuple[str | Placeholder, ...]

    @property
    def placeholders(self) -> tuple[Placeholder, ...]:
        return tuple(p for p in self.parts if isinstance(p, Placeholder))


class TemplateError(ValueError):
    """The reason text is not a valid template; the message says how to fix it."""


def parse_template(text: str) -> Template:
    """Split ``text`` into literals and placeholders; raises ``TemplateError``."""
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(
            f"{exc} — write a field as '{{amount}}'; write a literal brace as '{{{{' or '}}}}'"
        ) from exc
    parts: list[str | Placeholder] = []
    for literal, name, raw_spec, conversion in pieces:
        if literal:
            parts.append(literal)
        if name is None:
            continue
        if conversion is not None:
            raise TemplateError(
                f"'{{{name}!{conversion}}}' uses a conversion — remove '!{conversion}'"
            )
        if not _PATH_RE.match(name):
            raise TemplateError(
                f"'{{{name}}}' is not a field path — write e.g. '{{amount}}', "
                "'{scores.fraud}' or '{items.0.sku}'"
            )
        spec = raw_spec or ""
        if not _SPEC_RE.match(spec):
            raise TemplateError(
                f"the format '{spec}' of '{{{name}}}' is not allowed — use e.g. ':.3f' or ':,'"
            )
        parts.append(Placeholder(name, spec))
    return Template(tuple(parts))


def check_spec(spec: str, kind: str) -> str | None:
    """A problem with using format ``spec`` on a field of ``kind``, or None."""
    if not spec:
        return None
    by_kind: dict[str, list[Any]] = {"number": [1.5, 2], "string": ["x"], "boolean": ["true"]}
    samples = by_kind.get(kind, [1.5, "x"])
    for sample in samples:
        try:
            format(sample, spec)
        except (ValueError, TypeError):
            continue
        return None
    return f"the format ':{spec}' does not fit a {kind} value — e.g. ':.3f' for numbers"


def format_value(value: Any, spec: str) -> str:
    """One scalar as text (see the module docstring for the defaults)."""
    if value is None or isinstance(value, dict | list):
        return MISSING
    if isinstance(value, bool):
        value = "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return MISSING
    try:
        if spec:
            return format(value, spec)
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)
    except (ValueError, TypeError):
        return MISSING


def render(template: Template, value_of: Callable[[str], Any]) -> str:
    """The sentence for one event; ``value_of(path)`` gives the (coerced) field value."""
    out: list[str] = []
    for part in template.parts:
        if isinstance(part, str):
            out.append(part)
        else:
            out.append(format_value(value_of(part.path), part.spec))
    return "".join(out)
