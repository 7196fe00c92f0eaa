"""Read a rule file's ``windows:`` list into ``WindowSpec`` values, or problems.

Called by ``app.rules.loader`` with the YAML it read (mappings from its line-aware
reader, so every problem has a line; plain dicts work too). A window with any problem is
left out; every problem names the window, the line and the fix. The file format is shown
in ``app.rules.windows``.

Pure: no I/O.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from app.declarations.yamlsrc import did_you_mean
from app.rules.language.conditions import field_kind
from app.rules.language.spec import SCORES_PREFIX, RuleProblem, Scalar, SourceRef
from app.rules.windows.spec import (
    AGGREGATES,
    MAX_WITHIN_S,
    Aggregate,
    WindowSpec,
    duplicate_windows,
)
from app.rules.windows.where import (
    LIST_OPERATORS,
    WHERE_OPERATORS,
    Where,
    WhereAll,
    WhereAny,
    WhereNot,
    WhereOp,
    WhereTest,
    scalar_kind,
)

__all__ = ["WINDOW_KEYS", "parse_windows"]

WINDOW_KEYS = ("name", "within", "from", "where", *AGGREGATES)
_ORDERING = frozenset({"gt", "gte", "lt", "lte"})
_PRESENCE = frozenset({"exists", "missing"})
_MAX_PATTERN = 500
_GROUPS = ("all", "any", "not")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DURATION_RE = re.compile(r"^(\d{1,7})\s*(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
# Field kind -> the kind of operand it needs; "any" takes every scalar.
_EXPECTED = {"number": "number", "string": "string", "boolean": "boolean"}


def _line(value: Any, fallback: int | None) -> int | None:
    """The line the loader's YAML reader put on a mapping (duck-typed, so plain dicts
    work too and this module needs no import of the loader at load time)."""
    line = getattr(value, "line", None)
    return line if isinstance(line, int) else fallback


def _key_line(mapping: Any, key: str) -> int | None:
    lines = getattr(mapping, "key_lines", None)
    found = lines.get(key) if isinstance(lines, dict) else None
    return found if isinstance(found, int) else _line(mapping, None)


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string '{value}'"
    if isinstance(value, int | float):
        return f"the number {value}"
    if value is None:
        return "nothing (null)"
    return "a list" if isinstance(value, list) else "a mapping"


class _Bad(Exception):
    """Raised after a problem is recorded, to abandon the window being read."""


class _Parser:
    def __init__(
        self,
        file: str,
        event_type: str,
        field_types: Mapping[str, Mapping[str, str]],
        score_types: Mapping[str, Mapping[str, str]],
    ) -> None:
        self.file = file
        self.event_type = event_type
        self.field_types = field_types
        self.score_types = score_types
        self.problems: list[RuleProblem] = []
        self.label = ""

    def problem(self, line: int | None, message: str) -> None:
        self.problems.append(RuleProblem(self.file, line, None, f"{self.label}{message}"))

    def fail(self, line: int | None, message: str) -> _Bad:
        self.problem(line, message)
        return _Bad()

    def window(self, raw: Any, index: int, list_line: int | None) -> WindowSpec | None:
        line = _line(raw, list_line)
        self.label = f"window #{index + 1}: "
        if not isinstance(raw, Mapping):
            self.problem(
                line,
                f"is {_describe(raw)}, not a mapping — write it as '- name: ...' with "
                "'within' and an aggregate indented below",
            )
            return None
        before = len(self.problems)
        name = raw.get("name")
        if "name" not in raw:
            self.problem(line, "has no 'name' — add e.g. 'name: countries_over_500_10m'")
        elif not isinstance(name, str) or not _NAME_RE.match(name):
            fix = re.sub(r"[^a-z0-9_]+", "_", str(name).lower()).strip("_") or "my_window"
            if not fix[0].isalpha():
                fix = f"w_{fix}"
            self.problem(
                _key_line(raw, "name"),
                f"the name {name!r} is not allowed — use lower-case letters, digits and "
                f"'_', starting with a letter (at most 63), e.g. '{fix[:63]}'",
            )
        else:
            self.label = f"window '{name}': "
        for key, key_line in getattr(raw, "duplicate_keys", ()):
            self.problem(key_line, f"key '{key}' appears twice — keep one")
        for key in raw:
            if key not in WINDOW_KEYS:
                self.problem(
                    _key_line(raw, str(key)),
                    f"unknown key '{key}'{did_you_mean(str(key), WINDOW_KEYS)} "
                    f"(allowed: {', '.join(WINDOW_KEYS)})",
                )
        within = self.within(raw, line)
        source_type = self.source_type(raw)
        where: Where | None = None
        aggregate: tuple[Aggregate, str | None] | None = None
        if source_type is not None and "where" in raw:
            where = self.attempt(
                lambda: self.condition(source_type, raw["where"], _key_line(raw, "where"))
            )
        aggregate = self.attempt(lambda: self.aggregate(source_type, raw, line))
        if len(self.problems) != before or within is None or source_type is None:
            return None
        assert aggregate is not None
        assert isinstance(name, str)
        return WindowSpec(
            name=name,
            within_s=within,
            source_type=source_type,
            target_type=self.event_type,
            where=where,
            aggregate=aggregate[0],
            of=aggregate[1],
            source=SourceRef(self.file, line),
        )

    def attempt(self, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except _Bad:
            return None

    def within(self, raw: Mapping[str, Any], line: int | None) -> float | None:
        if "within" not in raw:
            self.problem(line, "has no 'within' — add how far back it looks, e.g. 'within: 10m'")
            return None
        value = raw["within"]
        match = _DURATION_RE.match(value.strip()) if isinstance(value, str) else None
        seconds = int(match[1]) * _UNIT_S[match[2]] if match else 0
        if match and 0 < seconds <= MAX_WITHIN_S:
            return float(seconds)
        fix = "write a number and s/m/h/d, e.g. '30s', '10m', '1h' or '2d' (at most 7d)"
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            fix = f"write '{value}s' for seconds, or minutes/hours like '10m', '1h' (at most 7d)"
        elif match:
            fix = "write a duration above zero and at most 7d"
        self.problem(
            _key_line(raw, "within"), f"'within: {value}' is not a usable duration — {fix}"
        )
        return None

    def source_type(self, raw: Mapping[str, Any]) -> str | None:
        if "from" not in raw:
            return self.event_type
        value = raw["from"]
        if isinstance(value, str) and value in self.field_types:
            return value
        known = sorted(self.field_types)
        self.problem(
            _key_line(raw, "from"),
            f"unknown event type {value!r} in 'from'{did_you_mean(str(value), known)} "
            f"(known: {', '.join(known)}; leave 'from' out for {self.event_type} events)",
        )
        return None

    def aggregate(
        self, source_type: str | None, raw: Mapping[str, Any], line: int | None
    ) -> tuple[Aggregate, str | None]:
        """The one aggregate and its path; the path is checked once ``from`` is known."""
        found = [a for a in AGGREGATES if a in raw]
        if not found:
            raise self.fail(
                line,
                "needs one aggregate — add 'count: true', 'sum: <number field>', "
                "'distinct: <field>' or 'max: <number field>'",
            )
        if len(found) > 1:
            raise self.fail(
                _key_line(raw, found[1]),
                f"has {len(found)} aggregates ({', '.join(found)}) — keep exactly one and "
                "declare another window for the other",
            )
        aggregate = found[0]
        value, at = raw[aggregate], _key_line(raw, aggregate)
        if aggregate == "count":
            if value is not True:
                raise self.fail(at, f"'count' must be 'true', not {_describe(value)}")
            return aggregate, None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(
                at,
                f"'{aggregate}' needs a field path, e.g. '{aggregate}: "
                f"{'country' if aggregate == 'distinct' else 'amount'}', not {_describe(value)}",
            )
        path = value.strip()
        if source_type is None:
            raise _Bad  # 'from' is wrong (reported); the path cannot be checked
        kind = self.resolve(source_type, path, at)
        if aggregate in ("sum", "max") and kind not in ("number", "any"):
            raise self.fail(
                at,
                f"'{aggregate}' needs a number field, but '{path}' is {kind} — "
                f"{aggregate} a number such as 'amount', or use 'distinct: {path}' or "
                "'count: true'",
            )
        if aggregate == "distinct" and kind in ("array", "object"):
            raise self.fail(
                at, f"'{path}' is a whole {kind} — count distinct values of one of its fields"
            )
        return aggregate, path

    def resolve(self, source_type: str, path: str, line: int | None) -> str:
        """The kind of ``path`` on ``source_type`` events (field or ``scores.<name>``)."""
        if path.startswith(SCORES_PREFIX) or path == "scores":
            scores = self.score_types.get(source_type, {})
            name = path[len(SCORES_PREFIX) :]
            if name in scores:
                return scores[name]
            known = ", ".join(f"scores.{s}" for s in scores) or "none"
            close = difflib.get_close_matches(name, list(scores), n=1, cutoff=0.6)
            hint = f" — did you mean 'scores.{close[0]}'?" if close else ""
            raise self.fail(
                line, f"unknown score '{path}' for {source_type} events{hint} (known: {known})"
            )
        fields = self.field_types.get(source_type, {})
        kind = field_kind(fields, path)
        if kind is None:
            shown = sorted(p.replace(".*.", ".0.") for p in fields)
            raise self.fail(
                line,
                f"unknown field '{path}' for {source_type} events{did_you_mean(path, shown)} "
                f"(known: {', '.join(shown)}; model scores are 'scores.<name>')",
            )
        return kind

    def condition(self, source_type: str, raw: Any, line: int | None) -> Where:
        line = _line(raw, line)
        if not isinstance(raw, Mapping) or not raw:
            raise self.fail(
                line,
                f"a 'where' condition must be a mapping, not {_describe(raw)} — use "
                "'{field: <path>, <operator>: <value>}' or 'all:'/'any:'/'not:'",
            )
        groups = [g for g in _GROUPS if g in raw]
        if not groups:
            return self.test(source_type, raw, line)
        if len(raw) > 1:
            raise self.fail(
                line,
                f"a condition with '{groups[0]}' may hold nothing else (found "
                f"{', '.join(map(str, raw))}) — nest the others inside the list",
            )
        group = groups[0]
        body, body_line = raw[group], _key_line(raw, group)
        if group == "not":
            return WhereNot(self.condition(source_type, body, body_line))
        if not isinstance(body, list) or not body:
            raise self.fail(
                body_line, f"'{group}' needs a non-empty list of conditions, not {_describe(body)}"
            )
        parts: list[Where] = []
        for item in body:
            try:
                parts.append(self.condition(source_type, item, body_line))
            except _Bad:
                continue  # recorded; check the siblings too
        if len(parts) != len(body):
            raise _Bad
        return WhereAll(tuple(parts)) if group == "all" else WhereAny(tuple(parts))

    def test(self, source_type: str, raw: Mapping[str, Any], line: int | None) -> WhereTest:
        allowed = ("field", *WHERE_OPERATORS)
        for key in raw:
            if key not in allowed:
                raise self.fail(
                    _key_line(raw, str(key)),
                    f"unknown key '{key}' in a condition{did_you_mean(str(key), allowed)} "
                    f"(operators: {', '.join(WHERE_OPERATORS)})",
                )
        path = raw.get("field")
        if not isinstance(path, str) or not path.strip():
            raise self.fail(line, "a condition needs 'field: <path>', e.g. 'field: amount'")
        path = path.strip()
        ops = [op for op in WHERE_OPERATORS if op in raw]
        if len(ops) != 1:
            raise self.fail(
                line,
                f"the condition on '{path}' has {len(ops)} operators — keep exactly one "
                f"({', '.join(ops) or ', '.join(WHERE_OPERATORS)}); combine several with 'all:'",
            )
        op: WhereOp = ops[0]
        kind = self.resolve(source_type, path, line)
        return WhereTest(path, op, self.operand(path, kind, op, raw[op], _key_line(raw, op)))

    def operand(
        self, path: str, kind: str, op: WhereOp, value: Any, line: int | None
    ) -> Scalar | tuple[Scalar, ...] | None:
        if op in _PRESENCE:
            if value is not True:
                other = "missing" if op == "exists" else "exists"
                raise self.fail(
                    line, f"write '{op}: true', not {_describe(value)} (or use '{other}: true')"
                )
            return None
        if op == "matches":
            return self.pattern(path, kind, value, line)
        if kind in ("array", "object", "datetime"):
            raise self.fail(
                line,
                f"'{path}' ({kind}) cannot be compared with '{op}' — compare one of its fields",
            )
        if op not in LIST_OPERATORS:
            return self.scalar(path, kind, op, value, line)
        if not isinstance(value, list) or not value:
            raise self.fail(line, f"'{op}' needs a non-empty list, e.g. '{op}: [a, b]'")
        checked = tuple(self.scalar(path, kind, op, item, line) for item in value)
        if len({scalar_kind(v) for v in checked}) > 1:
            raise self.fail(line, f"'{op}' mixes kinds of values — use one kind")
        return checked

    def pattern(self, path: str, kind: str, value: Any, line: int | None) -> str:
        if kind not in ("string", "any"):
            raise self.fail(line, f"'{path}' ({kind}) is not text — 'matches' needs a text field")
        if not isinstance(value, str) or not value or len(value) > _MAX_PATTERN:
            raise self.fail(
                line,
                f"'matches' needs a regular expression (1-{_MAX_PATTERN} characters), "
                f"e.g. '(?i)password|locked out', not {_describe(value)}",
            )
        try:
            re.compile(value)
        except re.error as exc:
            raise self.fail(
                line, f"'{value}' is not a valid regular expression ({exc}) — fix or quote it"
            ) from None
        return value

    def scalar(self, path: str, kind: str, op: WhereOp, item: Any, line: int | None) -> Scalar:
        where = f"'{path}' ({kind})"
        if not isinstance(item, str | int | float) or (
            isinstance(item, float) and not math.isfinite(item)
        ):
            raise self.fail(line, f"{where} cannot be compared with {_describe(item)}")
        got = scalar_kind(item)
        if op in _ORDERING and (got != "number" or kind not in ("number", "any")):
            raise self.fail(
                line,
                f"{where} '{op}' {_describe(item)}: '{op}' compares numbers — "
                "use eq/ne/in/not_in/matches for text and true/false",
            )
        expected = _EXPECTED.get(kind)
        if expected is not None and got != expected:
            raise self.fail(
                line,
                f"{where} is compared with {_describe(item)} — compare it with a "
                f"{expected} (quote yes/no/on/off if you mean text)",
            )
        return item


def parse_windows(
    raw: object,
    *,
    file: str,
    event_type: str,
    field_types: Mapping[str, Mapping[str, str]],
    score_types: Mapping[str, Mapping[str, str]],
    line: int | None = None,
) -> tuple[tuple[WindowSpec, ...], list[RuleProblem]]:
    """The ``windows:`` list of one rule file (``ruleset: event_type``) → specs, problems.

    ``raw`` is the YAML-loaded value; mappings from the loader's line-aware reader give
    every problem its line (``line`` is that of the ``windows:`` key itself). A window
    with any problem is left out; every problem names the window and the fix.
    """
    parser = _Parser(file, event_type, field_types, score_types)
    if raw is None:
        return (), parser.problems
    if not isinstance(raw, list):
        parser.problem(
            line,
            f"'windows' must be a list of windows (each starting with '- name: ...'), "
            f"not {_describe(raw)}",
        )
        return (), parser.problems
    specs = [parser.window(item, i, line) for i, item in enumerate(raw)]
    valid = [s for s in specs if s is not None]
    parser.problems.extend(duplicate_windows(valid))
    first: dict[str, WindowSpec] = {}
    for spec in valid:
        first.setdefault(spec.name, spec)
    return tuple(first.values()), parser.problems
