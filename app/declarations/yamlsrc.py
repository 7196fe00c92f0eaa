"""YAML with line numbers, read safely: what the rule and declaration checkers work on.

Mappings become ``LineMap`` (a dict that knows its own line, each key's line and any key
written twice); nothing but plain YAML types is ever built. Also the small helpers every
checker message uses (``describe``, ``did_you_mean``).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import yaml


class LineMap(dict[Any, Any]):
    """A YAML mapping that remembers its own line and each key's line (1-based)."""

    line: int
    key_lines: dict[Any, int]
    duplicate_keys: list[tuple[Any, int]]


class LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are ``LineMap``s (safe: only plain YAML types are built)."""


def _construct_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LineMap:
    loader.flatten_mapping(node)
    data = LineMap()
    data.line = node.start_mark.line + 1
    data.key_lines = {}
    data.duplicate_keys = []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found an unhashable key",
                key_node.start_mark,
            )
        if key in data:
            # Plain YAML silently keeps the last value; for rules that hides mistakes.
            data.duplicate_keys.append((key, line))
        data[key] = loader.construct_object(value_node, deep=True)
        data.key_lines[key] = line
    return data


LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)


def plain(value: Any) -> Any:
    """YAML's ``LineMap`` as a plain dict, recursively (pydantic and JSON want plain)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def line_of(value: Any, fallback: int) -> int:
    """The line of a mapping, or ``fallback`` for values that carry none."""
    return value.line if isinstance(value, LineMap) else fallback


def key_line(mapping: LineMap, key: str) -> int:
    """The line ``key`` is written on (the mapping's line when it is absent)."""
    return mapping.key_lines.get(key, mapping.line)


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """`` — did you mean 'x'?`` for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" — did you mean '{close[0]}'?" if close else ""


def describe(value: Any) -> str:
    """How a YAML value reads in a message ("the string 'x'", "a list")."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float | str):
        kind = "string" if isinstance(value, str) else "number"
        shown = f"'{value}'" if isinstance(value, str) else str(value)
        return f"the {kind} {shown}"
    named = {type(None): "nothing (null)", list: "a list", LineMap: "a mapping"}
    return named.get(type(value), f"a {type(value).__name__} ({value})")
