"""What a correlation window is: ``WindowSpec``, its aggregates, and checks over a set of them.

A ``WindowSpec`` is the checked form of one entry of a rule file's ``windows:`` list
(``app.rules.windows.parse`` builds it); ``app.rules.windows.store`` keeps its state, which
rules read as ``windows.<name>``. The overview of windows (keys, event time, restart) is
in ``app.rules.windows``.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from app.rules.language.spec import WINDOWS_PREFIX, RuleProblem, SourceRef
from app.rules.windows.where import Where, canonical_where

__all__ = [
    "AGGREGATES",
    "MAX_WITHIN_S",
    "Aggregate",
    "WindowSpec",
    "duplicate_windows",
    "window_field_types",
]

Aggregate: TypeAlias = Literal["count", "sum", "distinct", "max"]
AGGREGATES: tuple[Aggregate, ...] = ("count", "sum", "distinct", "max")
MAX_WITHIN_S = 7 * 86_400


@dataclass(frozen=True)
class WindowSpec:
    """One declared window. ``source_type`` feeds it, ``target_type``'s rules read it as
    ``windows.<name>``; ``of`` is the path summed/maxed/counted distinct (None for count)."""

    name: str
    within_s: float
    source_type: str
    target_type: str
    where: Where | None
    aggregate: Aggregate
    of: str | None
    source: SourceRef

    @property
    def fingerprint(self) -> str:
        """Short sha256 of the meaning (not of the file or line): state is kept across a
        reload exactly when it is unchanged. Name and target are part of it, so a renamed
        window starts empty."""
        content = {
            "name": self.name,
            "within_s": self.within_s,
            "from": self.source_type,
            "to": self.target_type,
            "where": None if self.where is None else canonical_where(self.where),
            "aggregate": self.aggregate,
            "of": self.of,
        }
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def window_field_types(specs: Iterable[WindowSpec], target_type: str) -> dict[str, str]:
    """The fields ``target_type``'s rules may read: ``{"windows.<name>": "number"}``."""
    return {f"{WINDOWS_PREFIX}{s.name}": "number" for s in specs if s.target_type == target_type}


def duplicate_windows(specs: Sequence[WindowSpec]) -> list[RuleProblem]:
    """A problem for each window whose name an earlier one of the same ruleset already
    uses (for merging several files of one ruleset)."""
    first: dict[tuple[str, str], WindowSpec] = {}
    problems: list[RuleProblem] = []
    for spec in specs:
        earlier = first.setdefault((spec.target_type, spec.name), spec)
        if earlier is not spec:
            at = earlier.source
            where = at.file if at.line is None else f"{at.file}:{at.line}"
            problems.append(
                RuleProblem(
                    spec.source.file,
                    spec.source.line,
                    None,
                    f"window '{spec.name}' is declared twice (first at {where}) — "
                    "rename one of them",
                )
            )
    return problems
