"""Rows of history → events of a declared type, with their labels (``arbiter import``).

Pure: plain values in, plain values out, no I/O. ``plan_columns`` decides once per
column set what each column is (a field path, a label, or dropped) and refuses columns
it cannot place, naming them and the options that fix it. ``RowMapper`` then turns one
row into the validated event and its labels, or into a ``Rejected`` row that says why
(the pydantic errors with field and column names).

Cells: ``None``, an empty string and NaN are absent (an optional field left out, a
label not given). A dotted column (``device.kind``) builds the nested object. A text
cell for an object or array field is read as JSON (CSV cannot nest).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from app.declarations import DeclaredType
from app.declarations.spec import TIME_FIELD, FieldSpec, LabelSpec, TypeSpec
from app.store.imported import ImportedEvent

MAX_KEY = 128  # decisions.partition_key
Reason = Literal["invalid", "bad_label", "duplicate_id"]
REASONS: tuple[Reason, ...] = ("invalid", "bad_label", "duplicate_id")
_TRUE = frozenset({"true", "t", "yes", "y", "1", "1.0"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "0.0"})


class MappingError(ValueError):
    """The columns cannot be placed on the type: the message names them and the fix."""


@dataclass(frozen=True)
class Problem:
    """One reason a row was refused: the field (payload name, dotted), the column it came
    from when known, and what is wrong."""

    field: str
    message: str
    column: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"field": self.field, "message": self.message}
        if self.column is not None:
            out["column"] = self.column
        return out


@dataclass(frozen=True)
class Rejected:
    """A row that was not imported, with every reason."""

    row: int | None  # None: a CSV line that could not be split (its message names the line)
    reason: Reason
    problems: tuple[Problem, ...]
    raw: dict[str, Any]


@dataclass(frozen=True)
class ColumnPlan:
    """What each column of a source is: ``fields`` (column → field path), ``labels``
    (column → label), the rest dropped. ``time_given``: the source has the event time."""

    columns: tuple[str, ...]
    fields: Mapping[str, tuple[str, ...]]
    labels: Mapping[str, LabelSpec]
    time_given: bool
    json_paths: frozenset[tuple[str, ...]] = field(default_factory=frozenset)
    free_paths: frozenset[tuple[str, ...]] = field(default_factory=frozenset)  # no declared type


def dotted_columns(payload: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested payload as the columns an import reads (``device.kind``): the inverse of
    how nested fields are built from dotted column names (for writing files to import)."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if isinstance(value, Mapping):
            out.update(dotted_columns(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def is_absent(value: Any) -> bool:
    """An empty cell: None, an empty (or blank) string, or NaN."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, float) and math.isnan(value)


def parse_pairs(pairs: Sequence[str], option: str) -> dict[str, str]:
    """``--map a=b`` style options as a mapping; a malformed one raises ``MappingError``."""
    out: dict[str, str] = {}
    for pair in pairs:
        column, sep, target = pair.partition("=")
        if not sep or not column.strip() or not target.strip():
            raise MappingError(
                f"{option} {pair!r} is not COLUMN=NAME, e.g. {option} ts=occurred_at"
            )
        if column.strip() in out:
            raise MappingError(f"{option} names column {column.strip()!r} twice")
        out[column.strip()] = target.strip()
    return out


def time_name(spec: TypeSpec) -> str:
    """The payload name of the event time (``occurred_at`` for ``time: arrival``)."""
    return spec.time_field or TIME_FIELD


def _field_path(spec: TypeSpec, path: tuple[str, ...]) -> tuple[bool, FieldSpec | None]:
    """Whether ``path`` names a place in the type, and the field there (None inside
    ``attributes`` or an undeclared field kept by ``unknown_fields: keep``)."""
    keep = spec.unknown_fields == "keep"
    top = spec.field(path[0])
    if top is None:
        if path[0] == "attributes" and spec.attributes:
            return len(path) <= 2, None
        if path[0] == TIME_FIELD and spec.time_field is None:
            return len(path) == 1, None
        return keep, None
    current = top
    for name in path[1:]:
        if current.type != "object":
            return False, None
        child = current.child(name)
        if child is None:
            return keep, None
        current = child
    return True, current


def plan_columns(
    declared: DeclaredType,
    columns: Sequence[str],
    *,
    source: str,
    maps: Mapping[str, str],
    labels: Mapping[str, str],
    drops: frozenset[str] = frozenset(),
    lenient: bool = False,
) -> ColumnPlan:
    """Place every column of ``source`` on the type, or raise ``MappingError`` listing
    what could not be placed and how to fix it (also a ``--map``/``--label``/``--drop``
    naming a column the source lacks, and a required field no column gives).

    ``lenient`` (a later batch of JSON Lines, whose keys may differ line by line) raises
    nothing: a column it cannot place goes to the payload under its own name, so
    validation refuses just the rows that have it, naming it."""
    planner = _Planner(declared.spec, source, maps, labels, lenient)
    cols = tuple(str(c) for c in columns)
    if not lenient:
        planner.check_options(cols, drops)
    for column in cols:
        if column not in drops:
            planner.place(column)
    return planner.plan(cols)


@dataclass
class _Planner:
    spec: TypeSpec
    source: str
    maps: Mapping[str, str]
    labels: Mapping[str, str]
    lenient: bool
    fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    label_cols: dict[str, LabelSpec] = field(default_factory=dict)
    json_paths: set[tuple[str, ...]] = field(default_factory=set)
    free_paths: set[tuple[str, ...]] = field(default_factory=set)
    unknown: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def check_options(self, cols: tuple[str, ...], drops: frozenset[str]) -> None:
        given = set(cols)
        for option, names in (("--map", self.maps), ("--label", self.labels), ("--drop", drops)):
            missing = sorted(set(names) - given)
            if missing:
                self.problems.append(
                    f"{option} names {_names(missing)} but {self.source} has no such column "
                    f"(its columns: {_names(cols)})"
                )

    def place(self, column: str) -> None:
        spec = self.spec
        if column in self.labels:
            label = spec.label(self.labels[column])
            if label is not None:
                self.label_cols[column] = label
                return
            self.fields[column] = (column,)
            self.problems.append(
                f"--label {column}={self.labels[column]}: the type '{spec.name}' has no label "
                f"{self.labels[column]!r} (its labels: {_names(x.name for x in spec.labels)})"
            )
            return
        target = self.maps.get(column, column)
        path = tuple(target.split("."))
        ok, fspec = _field_path(spec, path) if all(path) else (False, None)
        if ok:
            self.fields[column] = path
            if fspec is None:
                self.free_paths.add(path)
            elif fspec.type in ("object", "array"):
                self.json_paths.add(path)
            return
        label = None if column in self.maps else spec.label(column)
        if label is not None:
            self.label_cols[column] = label
        elif self.lenient:
            self.fields[column] = (column,)
        elif column in self.maps:
            self.problems.append(
                f"--map {column}={target}: the type '{spec.name}' has no field {target!r}"
            )
        else:
            self.unknown.append(column)

    def plan(self, cols: tuple[str, ...]) -> ColumnPlan:
        spec = self.spec
        if self.unknown:
            self.problems.append(
                f"{self.source} has columns the type '{spec.name}' does not declare: "
                f"{_names(self.unknown)}. Map each to a field with --map COLUMN=FIELD (dotted "
                "for a nested field, e.g. --map kind=device.kind), to a label with --label "
                "COLUMN=LABEL, or leave it out with --drop COLUMN. Fields: "
                f"{_names(f.name for f in spec.fields)}; labels: "
                f"{_names(x.name for x in spec.labels)}"
            )
        placed = {p[0] for p in self.fields.values()}
        for f in spec.fields:
            if f.required and f.name not in placed and f.name != spec.time_field:
                self.problems.append(
                    f"{self.source} has no column for the required field {f.name!r}: name a "
                    f"column {f.name}, or map one with --map COLUMN={f.name}"
                )
        if self.problems and not self.lenient:
            raise MappingError("; ".join(self.problems))
        time_given = time_name(spec) in placed
        return ColumnPlan(
            cols,
            self.fields,
            self.label_cols,
            time_given,
            frozenset(self.json_paths),
            frozenset(self.free_paths),
        )


def _names(names: Any) -> str:
    shown = [str(n) for n in names]
    return ", ".join(shown) if shown else "none"


_INTEGER = re.compile(r"^[+-]?\d{1,18}$")


def spelled(text: str) -> bool | int | float | str:
    """What a text cell spells: ``12`` an integer, ``1.5`` a number, ``true``/``false`` a
    boolean, anything else the text itself."""
    stripped = text.strip()
    if _INTEGER.match(stripped):
        return int(stripped)
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        number = float(stripped)
    except ValueError:
        return text
    return number if math.isfinite(number) and any(ch.isdigit() for ch in stripped) else text


def label_value(label: LabelSpec, value: Any) -> bool | str | float:
    """``value`` as ``label`` says, or ``ValueError`` saying what it should be."""
    if label.type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"{value!r} is not a boolean: write true or false (or 1 / 0)")
    if label.type == "enum":
        text = str(value).strip()
        if text in label.values:
            return text
        raise ValueError(f"{value!r} is not one of {', '.join(label.values)}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


class RowMapper:
    """Turns rows laid out as ``plan`` says into events of ``declared``."""

    def __init__(self, declared: DeclaredType, plan: ColumnPlan, *, text: bool = False) -> None:
        """``text``: every cell was read as text (CSV); a value with no declared type
        (inside ``attributes``, or kept by ``unknown_fields: keep``) is then read as the
        number or boolean it spells, as JSON would have given it."""
        self._declared = declared
        self._plan = plan
        self._type = declared.spec.name
        self._time = time_name(declared.spec)
        self._by_field = {".".join(p): c for c, p in plan.fields.items()}
        self._fields = [
            (i, plan.fields[c], plan.fields[c] in plan.json_paths)
            for i, c in enumerate(plan.columns)
            if c in plan.fields
        ]
        self._text_free = {
            i for i, c in enumerate(plan.columns) if text and plan.fields.get(c) in plan.free_paths
        }
        self._labels = [
            (i, c, plan.labels[c]) for i, c in enumerate(plan.columns) if c in plan.labels
        ]

    def map(
        self, values: Sequence[Any], row: int, time: datetime | None = None
    ) -> ImportedEvent | Rejected:
        """Row ``row`` (its cells in column order) as an event, or why not. ``time`` is
        the event time given to a row whose source has none."""
        data = self._payload(values)
        if time is not None and not self._plan.time_given:
            data[self._time] = time
        problems: list[Problem] = []
        labels: dict[str, bool | str | float] = {}
        for i, column, label in self._labels:
            value = values[i]
            if is_absent(value):
                continue
            try:
                labels[label.name] = label_value(label, value)
            except ValueError as exc:
                problems.append(Problem(label.name, f"label {label.name}: {exc}", column))
        try:
            event = self._declared.model.model_validate(data)
        except ValidationError as exc:
            problems[:0] = [self._problem(e) for e in exc.errors(include_url=False)]
            return Rejected(row, "invalid", tuple(problems), self.raw(values))
        key = event.partition_key
        if len(key) > MAX_KEY:
            problems.insert(
                0,
                Problem(
                    self._declared.spec.key_field,
                    f"the key is {len(key)} characters long; at most {MAX_KEY} are stored",
                    self._by_field.get(self._declared.spec.key_field),
                ),
            )
            return Rejected(row, "invalid", tuple(problems), self.raw(values))
        if problems:
            return Rejected(row, "bad_label", tuple(problems), self.raw(values))
        return ImportedEvent(
            event_id=event.event_id,
            event_type=self._type,
            partition_key=key,
            occurred_at=event.occurred_at,
            payload=event.model_dump(mode="json"),
            labels=labels,
            row=row,
        )

    def _payload(self, values: Sequence[Any]) -> dict[str, Any]:
        """The row's present cells, placed at their field paths."""
        data: dict[str, Any] = {}
        for i, path, as_json in self._fields:
            value = values[i]
            if is_absent(value):
                continue
            if as_json and isinstance(value, str):
                with contextlib.suppress(ValueError):  # validation says what is wrong
                    value = json.loads(value)
            elif i in self._text_free and isinstance(value, str):
                value = spelled(value)
            node = data
            for name in path[:-1]:
                inner = node.setdefault(name, {})
                if not isinstance(inner, dict):
                    break  # a column gave the whole object: it wins
                node = inner
            else:
                node[path[-1]] = value
        return data

    def raw(self, values: Sequence[Any]) -> dict[str, Any]:
        """The row as it was read, by column."""
        return dict(zip(self._plan.columns, values, strict=True))

    def _problem(self, error: Any) -> Problem:
        where = ".".join(str(p) for p in error["loc"]) or "(row)"
        column = self._by_field.get(where)
        if column is None and error["type"] == "extra_forbidden":
            column = where
        return Problem(where, str(error["msg"]), column)
