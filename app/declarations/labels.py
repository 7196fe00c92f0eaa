"""Checking an outcome's labels against the labels its type declares.

An outcome may carry only labels its declaration names, each with a value of the
declared kind, so a misspelt label or a value no model can learn from is refused where
it arrives (a dead letter or a 422 naming the label and the fix) instead of being kept
and silently ignored by the trainer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app.declarations.spec import LabelSpec

FLAG_TEXT = frozenset({"true", "false"})


def label_problems(
    event_type: str, declared: Sequence[LabelSpec], labels: Mapping[str, Any]
) -> list[str]:
    """Why ``labels`` do not fit ``event_type``'s declared labels (empty when they do)."""
    by_name = {label.name: label for label in declared}
    problems: list[str] = []
    for name, value in labels.items():
        label = by_name.get(name)
        if label is None:
            problems.append(
                f"label '{name}' is not declared for {event_type} (declared: "
                f"{', '.join(by_name) or 'none'}): add it under 'labels:' in the type's "
                "declaration, or leave it out"
            )
        elif not _fits(label, value):
            problems.append(f"label '{name}' is {value!r}; {_wanted(label)}")
    return problems


def _fits(label: LabelSpec, value: Any) -> bool:
    if label.type == "boolean":
        if isinstance(value, bool):
            return True
        if isinstance(value, int | float):
            return value in (0, 1)
        return isinstance(value, str) and value.strip().lower() in FLAG_TEXT
    if label.type == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str) and value.strip().lower() in {v.lower() for v in label.values}


def _wanted(label: LabelSpec) -> str:
    if label.type == "boolean":
        return "send true or false"
    if label.type == "number":
        return "send a number"
    return f"send one of {', '.join(label.values)}"
