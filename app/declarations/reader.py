"""Reading declaration files: YAML in, checked ``TypeSpec`` out, or problems with the fix.

A declaration is written by a data owner, not a programmer, so every refusal names the
file, the line and what to write instead; the reader collects every problem of a file
rather than stopping at the first. The format is documented in docs/events.md.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import yaml

from app.declarations.spec import (
    DERIVED_FEATURES,
    FIELD_TYPES,
    ID_FIELD,
    LABEL_TYPES,
    MODEL_KINDS,
    OVER_ARRAYS,
    PAIRED,
    STRING_FORMATS,
    Derived,
    FieldSpec,
    FieldType,
    LabelSpec,
    LabelType,
    ModelKind,
    ModelSpec,
    Problem,
    TypeSpec,
)
from app.declarations.yamlsrc import (
    LineLoader,
    LineMap,
    describe,
    did_you_mean,
    key_line,
    line_of,
    plain,
)
from schemas.common import TYPE_NAME_PATTERN

NAME = re.compile(TYPE_NAME_PATTERN)
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
TOP_KEYS = (
    "type",
    "description",
    "id",
    "key",
    "time",
    "unknown_fields",
    "attributes",
    "fields",
    "labels",
    "models",
    "example",
)
FIELD_KEYS = (
    "type",
    "required",
    "description",
    "min",
    "max",
    "min_length",
    "max_length",
    "pattern",
    "format",
    "values",
    "text",
    "items",
    "fields",
)
# Which keys each field type accepts besides type, required and description.
FIELD_TYPE_KEYS: dict[str, tuple[str, ...]] = {
    "string": ("min_length", "max_length", "pattern", "format", "text"),
    "integer": ("min", "max"),
    "number": ("min", "max"),
    "boolean": (),
    "enum": ("values",),
    "datetime": (),
    "object": ("fields",),
    "array": ("items", "min_length", "max_length"),
}
LABEL_KEYS = ("type", "values")
MODEL_KEYS = ("name", "predicts", "kind", "features", "text", "costs")
COSTS_KEYS = ("false_positive", "false_negative")
PREDICTS_KEYS = ("label", "positive", "classes", "fallback")
FEATURES_KEYS = ("include", "exclude", "keep", "derived")
ARRIVAL = "arrival"
MAX_DEPTH = 4


class Invalid(Exception):
    """Raised inside the reader to abandon the current part; the problem is recorded."""


class _Reader:
    def __init__(self, display: str) -> None:
        self.display = display
        self.problems: list[Problem] = []

    def problem(self, line: int | None, message: str) -> None:
        self.problems.append(Problem(self.display, line, message))

    def fail(self, line: int | None, message: str) -> Invalid:
        self.problem(line, message)
        return Invalid(message)

    def unknown_keys(self, data: LineMap, allowed: tuple[str, ...], where: str) -> None:
        for key in data:
            if key not in allowed:
                hint = did_you_mean(str(key), allowed)
                self.problem(
                    key_line(data, key),
                    f"unknown key '{key}' in {where}{hint} (allowed: {', '.join(allowed)})",
                )
        for key, line in data.duplicate_keys:
            self.problem(line, f"'{key}' is written twice in {where}: keep one")

    def mapping(self, value: Any, line: int, what: str, example: str) -> LineMap:
        if not isinstance(value, LineMap):
            raise self.fail(line, f"{what} must be a mapping, not {describe(value)} — {example}")
        return value

    def name(self, value: Any, line: int, what: str, pattern: re.Pattern[str]) -> str:
        if not isinstance(value, str) or not pattern.match(value):
            raise self.fail(
                line,
                f"{what} {describe(value)} is not a valid name — use letters, digits and "
                "underscores, starting with a letter",
            )
        return value

    # -- the file

    def read(self, data: LineMap) -> TypeSpec:
        self.unknown_keys(data, TOP_KEYS, "the declaration")
        if "type" not in data:
            raise self.fail(data.line, "missing 'type' — start the file with 'type: <name>'")
        name = self.name(data["type"], key_line(data, "type"), "the type", NAME)
        description = self.text(data, "description")
        fields = self.fields(
            data.get("fields"), key_line(data, "fields"), "the declaration", depth=1
        )
        if "fields" not in data:
            self.problem(data.line, "missing 'fields' — list the event's fields under 'fields:'")
        by_name = {f.name: f for f in fields}
        id_field = self.id_field(data, by_name)
        key_field = self.key_field(data, by_name)
        time_field = self.time_field(data, by_name)
        unknown = data.get("unknown_fields", "reject")
        if unknown not in ("reject", "keep"):
            self.problem(
                key_line(data, "unknown_fields"),
                f"unknown_fields is {describe(unknown)} — write 'reject' (refuse events with "
                "fields not declared here) or 'keep' (keep them, unchecked)",
            )
            unknown = "reject"
        attributes = data.get("attributes", False)
        if not isinstance(attributes, bool):
            self.problem(
                key_line(data, "attributes"),
                f"attributes is {describe(attributes)} — write true (events may carry a free "
                "'attributes' mapping of extra values) or false",
            )
            attributes = False
        if attributes and "attributes" in by_name:
            self.problem(
                by_name["attributes"].line,
                "a field named 'attributes' clashes with 'attributes: true' — rename the field "
                "or drop 'attributes: true'",
            )
        labels = self.labels(data.get("labels"), key_line(data, "labels"))
        example = data.get("example")
        if example is not None and not isinstance(example, LineMap):
            self.problem(
                key_line(data, "example"),
                f"example is {describe(example)} — write one whole event as a mapping",
            )
            example = None
        spec = TypeSpec(
            name=name,
            file=self.display,
            line=data.line,
            fields=fields,
            id_field=id_field,
            key_field=key_field,
            time_field=time_field,
            unknown_fields=cast("Any", unknown),
            description=description,
            attributes=attributes,
            labels=labels,
            example=plain(example) if example is not None else None,
            example_line=key_line(data, "example") if example is not None else None,
        )
        models = self.models(data.get("models"), key_line(data, "models"), spec)
        return replace(spec, models=models)

    def text(self, data: LineMap, key: str) -> str | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(key_line(data, key), f"{key} must be text, not {describe(value)}")
            return None
        return value

    def id_field(self, data: LineMap, fields: dict[str, FieldSpec]) -> str:
        line = key_line(data, "id")
        name = data.get("id", ID_FIELD)
        found = self.named_field(name, line, fields, "id", "the field that holds each event's id")
        if found is not None and (found.type != "string" or not found.required):
            self.problem(
                found.line,
                f"the id field '{found.name}' must be a required string — write "
                "'type: string' and drop 'required: false'",
            )
        return str(name)

    def key_field(self, data: LineMap, fields: dict[str, FieldSpec]) -> str:
        if "key" not in data:
            self.problem(
                data.line,
                "missing 'key' — name the field events are partitioned and windowed by, "
                "e.g. 'key: customer_id'",
            )
            return ""
        name = data["key"]
        found = self.named_field(name, key_line(data, "key"), fields, "key", "a field")
        if found is not None and (found.type not in ("string", "integer") or not found.required):
            self.problem(
                found.line,
                f"the key field '{found.name}' must be a required string or integer "
                f"(it is {'an optional ' if not found.required else 'a '}{found.type})",
            )
        return str(name)

    def time_field(self, data: LineMap, fields: dict[str, FieldSpec]) -> str | None:
        name = data.get("time", ARRIVAL)
        if name == ARRIVAL:
            return None
        found = self.named_field(
            name, key_line(data, "time"), fields, "time", f"a datetime field, or '{ARRIVAL}'"
        )
        if found is not None and (found.type != "datetime" or not found.required):
            self.problem(
                found.line,
                f"the time field '{found.name}' must be a required datetime — or write "
                f"'time: {ARRIVAL}' to use the time each event arrives",
            )
        return str(name)

    def named_field(
        self, name: Any, line: int, fields: dict[str, FieldSpec], key: str, what: str
    ) -> FieldSpec | None:
        if isinstance(name, str) and name in fields:
            return fields[name]
        hint = did_you_mean(str(name), list(fields))
        self.problem(
            line,
            f"{key}: {describe(name)} is not a field of this type{hint} — name {what} "
            f"declared under 'fields' (declared: {', '.join(fields) or 'none'})",
        )
        return None

    # -- fields

    def fields(self, value: Any, line: int, where: str, *, depth: int) -> tuple[FieldSpec, ...]:
        if value is None:
            return ()
        try:
            data = self.mapping(value, line, f"'fields' of {where}", "write 'name: type' lines")
        except Invalid:
            return ()
        for key, key_line_no in data.duplicate_keys:
            self.problem(key_line_no, f"field '{key}' is declared twice in {where}: keep one")
        out: list[FieldSpec] = []
        for name, body in data.items():
            fline = key_line(data, name)
            try:
                self.name(name, fline, "the field name", FIELD_NAME)
                out.append(self.field(str(name), body, fline, depth=depth))
            except Invalid:
                continue
        return tuple(out)

    def field(self, name: str, body: Any, line: int, *, depth: int) -> FieldSpec:
        data = self.mapping(
            _shorthand(body, line),
            line,
            f"field '{name}'",
            "write 'name: number' or 'name: {type: number}'",
        )
        self.unknown_keys(data, FIELD_KEYS, f"field '{name}'")
        kind = data.get("type")
        if kind not in FIELD_TYPES:
            hint = did_you_mean(str(kind), FIELD_TYPES)
            raise self.fail(
                key_line(data, "type"),
                f"field '{name}' has unknown type {describe(kind)}{hint} — use one of "
                f"{', '.join(FIELD_TYPES)}",
            )
        ftype = cast("FieldType", kind)
        for key in data:
            if key in FIELD_KEYS[3:] and key not in FIELD_TYPE_KEYS[ftype]:
                self.problem(
                    key_line(data, key),
                    f"'{key}' does not apply to a {ftype} field ('{name}') — remove it"
                    + (
                        f"; a {ftype} takes {', '.join(FIELD_TYPE_KEYS[ftype])}"
                        if FIELD_TYPE_KEYS[ftype]
                        else ""
                    ),
                )
        required = self.flag(data, "required", True, name)
        text = self.flag(data, "text", False, name)
        minimum = self.number(data, "min", name)
        maximum = self.number(data, "max", name)
        min_length = self.count(data, "min_length", name)
        max_length = self.count(data, "max_length", name)
        if minimum is not None and maximum is not None and minimum > maximum:
            self.problem(
                key_line(data, "min"), f"field '{name}': min {minimum} is above max {maximum}"
            )
        if min_length is not None and max_length is not None and min_length > max_length:
            self.problem(
                key_line(data, "min_length"),
                f"field '{name}': min_length {min_length} is above max_length {max_length}",
            )
        pattern = self.pattern(data, name)
        fmt = data.get("format")
        if fmt is not None and fmt not in STRING_FORMATS:
            self.problem(
                key_line(data, "format"),
                f"field '{name}' has unknown format {describe(fmt)}"
                f"{did_you_mean(str(fmt), STRING_FORMATS)} — use one of "
                f"{', '.join(STRING_FORMATS)}, or a 'pattern'",
            )
            fmt = None
        values = self.values(data, name) if ftype == "enum" else ()
        items = None
        fields: tuple[FieldSpec, ...] = ()
        if ftype in ("object", "array") and depth >= MAX_DEPTH:
            raise self.fail(
                line,
                f"field '{name}' nests objects and arrays deeper than {MAX_DEPTH} levels — "
                "flatten it",
            )
        if ftype == "array":
            if "items" not in data:
                raise self.fail(
                    line, f"array field '{name}' needs 'items:' — the type of each element"
                )
            items = self.field(f"{name}[]", data["items"], key_line(data, "items"), depth=depth + 1)
        if ftype == "object":
            fields = self.fields(
                data.get("fields"), key_line(data, "fields"), f"field '{name}'", depth=depth + 1
            )
            if not fields:
                self.problem(line, f"object field '{name}' needs 'fields:' — what it holds")
        return FieldSpec(
            name=name,
            type=ftype,
            line=line,
            required=required,
            description=self.text(data, "description"),
            minimum=minimum,
            maximum=maximum,
            min_length=min_length,
            max_length=max_length,
            pattern=pattern,
            format=cast("str | None", fmt),
            values=values,
            text=text,
            items=items,
            fields=fields,
        )

    def flag(self, data: LineMap, key: str, default: bool, name: str) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.problem(
                key_line(data, key),
                f"field '{name}': {key} must be true or false, not {describe(value)}",
            )
            return default
        return value

    def number(self, data: LineMap, key: str, name: str) -> float | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(
                key_line(data, key),
                f"field '{name}': {key} must be a number, not {describe(value)}",
            )
            return None
        return float(value)

    def count(self, data: LineMap, key: str, name: str) -> int | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.problem(
                key_line(data, key),
                f"field '{name}': {key} must be a whole number of 0 or more, not {describe(value)}",
            )
            return None
        return value

    def pattern(self, data: LineMap, name: str) -> str | None:
        value = data.get("pattern")
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(key_line(data, "pattern"), f"field '{name}': pattern must be text")
            return None
        try:
            re.compile(value)
        except re.error as exc:
            self.problem(
                key_line(data, "pattern"),
                f"field '{name}': pattern {value!r} is not a valid regular expression ({exc}) "
                "— quote it in single quotes and fix the expression",
            )
            return None
        return value

    def values(self, data: LineMap, name: str) -> tuple[str | int | float | bool, ...]:
        values = data.get("values")
        line = key_line(data, "values")
        if not isinstance(values, list) or not values:
            self.problem(line, f"enum field '{name}' needs 'values:' — the list of allowed values")
            return ()
        kinds = {type(v) for v in values}
        if not all(isinstance(v, str | int | float | bool) for v in values) or len(kinds) > 1:
            self.problem(
                line,
                f"enum field '{name}': values must all be text, or all numbers — "
                "quote them to make them text",
            )
            return ()
        if len(set(values)) != len(values):
            self.problem(line, f"enum field '{name}' lists a value twice: keep one")
        return tuple(values)

    # -- labels and models

    def labels(self, value: Any, line: int) -> tuple[LabelSpec, ...]:
        if value is None:
            return ()
        try:
            data = self.mapping(value, line, "'labels'", "write 'label_name: boolean' lines")
        except Invalid:
            return ()
        out: list[LabelSpec] = []
        for name, body in data.items():
            lline = key_line(data, name)
            try:
                self.name(name, lline, "the label name", NAME)
            except Invalid:
                continue
            try:
                body = self.mapping(  # noqa: PLW2901 - the same label, checked
                    _shorthand(body, lline), lline, f"label '{name}'", "write 'name: boolean'"
                )
            except Invalid:
                continue
            self.unknown_keys(body, LABEL_KEYS, f"label '{name}'")
            kind = body.get("type")
            if kind not in LABEL_TYPES:
                self.problem(
                    key_line(body, "type"),
                    f"label '{name}' has unknown type {describe(kind)}"
                    f"{did_you_mean(str(kind), LABEL_TYPES)} — use one of {', '.join(LABEL_TYPES)}",
                )
                continue
            values: tuple[str, ...] = ()
            if kind == "enum":
                raw = body.get("values")
                if not isinstance(raw, list) or not raw or not all(isinstance(v, str) for v in raw):
                    self.problem(
                        key_line(body, "values"),
                        f"enum label '{name}' needs 'values:' — a list of text values",
                    )
                    continue
                values = tuple(raw)
            out.append(LabelSpec(str(name), cast("LabelType", kind), lline, values))
        return tuple(out)

    def models(self, value: Any, line: int, spec: TypeSpec) -> tuple[ModelSpec, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem(
                line, f"'models' must be a list, not {describe(value)} — start each with '- name:'"
            )
            return ()
        out: list[ModelSpec] = []
        for item in value:
            try:
                body = self.mapping(item, line, "a model", "start it with '- name: <model>'")
                out.append(self.model(body, spec))
            except Invalid:
                continue
        seen: set[str] = set()
        for model in out:
            if model.name in seen:
                self.problem(model.line, f"model '{model.name}' is declared twice: rename one")
            seen.add(model.name)
        texts = [m for m in out if m.kind == "text"]
        for model in texts[1:]:
            if model.text != texts[0].text:
                self.problem(
                    model.line,
                    f"text model '{model.name}' reads {', '.join(model.text)} but "
                    f"'{texts[0].name}' reads {', '.join(texts[0].text)}: the text models of a "
                    "type share one encoding of one text — give them the same 'text:' fields",
                )
        return tuple(out)

    def model(self, data: LineMap, spec: TypeSpec) -> ModelSpec:
        self.unknown_keys(data, MODEL_KEYS, "the model")
        if "name" not in data:
            raise self.fail(data.line, "a model needs 'name:' — e.g. 'name: default_risk'")
        name = self.name(data["name"], key_line(data, "name"), "the model name", NAME)
        kind = data.get("kind", "tabular")
        if kind not in MODEL_KINDS:
            raise self.fail(
                key_line(data, "kind"),
                f"model '{name}' has unknown kind {describe(kind)} — use tabular or text",
            )
        predicts = self.mapping(
            data.get("predicts"),
            key_line(data, "predicts"),
            f"'predicts' of model '{name}'",
            "write 'predicts: {label: <label>, positive: [true]}'",
        )
        self.unknown_keys(predicts, PREDICTS_KEYS, f"'predicts' of model '{name}'")
        label_name = predicts.get("label")
        label = spec.label(label_name) if isinstance(label_name, str) else None
        if label is None:
            declared = [lab.name for lab in spec.labels]
            raise self.fail(
                key_line(predicts, "label"),
                f"model '{name}' predicts label {describe(label_name)}, which no outcome of "
                f"'{spec.name}' carries{did_you_mean(str(label_name), declared)} — declare it "
                f"under 'labels:' (declared: {', '.join(declared) or 'none'})",
            )
        positive, classes = self.target(predicts, name, label)
        fallback = self.fallback(predicts, name, label, spec)
        if classes and kind == "tabular":
            raise self.fail(
                key_line(predicts, "classes") if "classes" in predicts else predicts.line,
                f"model '{name}': a tabular model predicts yes or no — name the positive "
                f"values ('positive: [...]') of label '{label.name}', or make it a text model "
                "('kind: text') to predict one of several classes",
            )
        features = data.get("features")
        include: tuple[str, ...] = ()
        exclude: tuple[str, ...] = ()
        keep: tuple[str, ...] = ()
        derived: tuple[Derived, ...] = ()
        if features is not None:
            fmap = self.mapping(
                features,
                key_line(data, "features"),
                f"'features' of model '{name}'",
                "write 'features: {exclude: [field]}'",
            )
            self.unknown_keys(fmap, FEATURES_KEYS, f"'features' of model '{name}'")
            include = self.field_list(fmap, "include", name, spec)
            exclude = self.field_list(fmap, "exclude", name, spec)
            keep = self.field_list(fmap, "keep", name, spec)
            derived = self.derived(fmap, name, spec)
        text = self.text_fields(data, name, spec, cast("ModelKind", kind))
        costs = self.costs(data, name, bool(classes))
        return ModelSpec(
            name=name,
            label=label.name,
            kind=cast("ModelKind", kind),
            line=data.line,
            positive=positive,
            classes=classes,
            include=include,
            exclude=exclude,
            keep=keep,
            derived=derived,
            text=text,
            fallback=fallback,
            costs=costs,
        )

    def target(
        self, predicts: LineMap, name: str, label: LabelSpec
    ) -> tuple[tuple[str | bool | float, ...], tuple[str, ...]]:
        line = predicts.line
        positive = predicts.get("positive")
        classes = predicts.get("classes")
        if positive is not None and classes is not None:
            raise self.fail(
                line, f"model '{name}': write 'positive' (a yes/no model) or 'classes', not both"
            )
        if label.type == "boolean":
            if classes is not None:
                raise self.fail(
                    line, f"model '{name}': a boolean label has no classes — drop 'classes'"
                )
            return (True,), ()
        if label.type == "number":
            raise self.fail(
                line,
                f"model '{name}' predicts the number label '{label.name}': only boolean and "
                "enum labels can be predicted yet — declare the label as boolean or enum",
            )

        def check(value: Any) -> bool:
            return isinstance(value, str) and value in label.values

        if positive is not None:
            values = positive if isinstance(positive, list) else [positive]
            wrong = [v for v in values if not check(v)]
            if wrong or not values:
                raise self.fail(
                    key_line(predicts, "positive"),
                    f"model '{name}': positive {describe(wrong[0] if wrong else positive)} is not "
                    f"a value of label '{label.name}' (values: {', '.join(label.values)})",
                )
            return tuple(values), ()
        values = classes if isinstance(classes, list) else list(label.values)
        wrong = [v for v in values if not check(v)]
        if wrong or len(values) < 2:
            raise self.fail(
                key_line(predicts, "classes"),
                f"model '{name}': classes must be two or more values of label '{label.name}' "
                f"(values: {', '.join(label.values)})",
            )
        return (), tuple(values)

    def costs(self, data: LineMap, name: str, multi_class: bool) -> tuple[float, float] | None:
        """``costs: {false_positive: 1, false_negative: 20}``: what each wrong call costs."""
        if data.get("costs") is None:
            return None
        line = key_line(data, "costs")
        body = self.mapping(
            data["costs"],
            line,
            f"'costs' of model '{name}'",
            "write 'costs: {false_positive: 1, false_negative: 20}'",
        )
        self.unknown_keys(body, COSTS_KEYS, f"'costs' of model '{name}'")
        values = [body.get(k) for k in COSTS_KEYS]
        if multi_class or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in values
        ):
            raise self.fail(
                line,
                f"model '{name}': costs are two positive numbers for a yes/no model, e.g. "
                "'costs: {false_positive: 1, false_negative: 20}'",
            )
        return float(values[0]), float(values[1])  # type: ignore[arg-type]

    def fallback(
        self, predicts: LineMap, name: str, label: LabelSpec, spec: TypeSpec
    ) -> str | None:
        """``fallback: <boolean label>``: what an outcome without ``label`` says."""
        value = predicts.get("fallback")
        if value is None:
            return None
        line = key_line(predicts, "fallback")
        found = spec.label(value) if isinstance(value, str) else None
        if found is None or found.type != "boolean" or found.name == label.name:
            booleans = [lab.name for lab in spec.labels if lab.type == "boolean"]
            raise self.fail(
                line,
                f"model '{name}': fallback {describe(value)} must be another boolean label of "
                f"'{spec.name}' (boolean labels: {', '.join(booleans) or 'none'})",
            )
        if label.type == "boolean" or "classes" in predicts:
            raise self.fail(
                line,
                f"model '{name}': a fallback only serves a yes/no model of an enum label — "
                "drop 'fallback'",
            )
        return found.name

    def field_list(self, data: LineMap, key: str, name: str, spec: TypeSpec) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(
                key_line(data, key), f"model '{name}': {key} must be a list of field names"
            )
            return ()
        known = [f.name for f in spec.fields]
        for field_name in value:
            if field_name == "attributes" and spec.attributes:
                continue  # the free attributes, as one
            if spec.path(field_name)[0] is None:
                self.problem(
                    key_line(data, key),
                    f"model '{name}': {key} names '{field_name}', which is not a field of "
                    f"'{spec.name}'{did_you_mean(field_name.split('.')[0], known)}",
                )
        return tuple(value)

    def derived(self, data: LineMap, name: str, spec: TypeSpec) -> tuple[Derived, ...]:
        value = data.get("derived")
        if value is None:
            return ()
        line = key_line(data, "derived")
        if not isinstance(value, list):
            self.problem(line, f"model '{name}': derived must be a list such as [{{log: amount}}]")
            return ()
        out: list[Derived] = []
        for item in value:
            if not isinstance(item, dict) or len(item) != 1:
                self.problem(
                    line_of(item, line),
                    f"model '{name}': each derived feature is one 'function: field' pair, "
                    f"e.g. {{log: amount}} (functions: {', '.join(DERIVED_FEATURES)})",
                )
                continue
            function, argument = next(iter(item.items()))
            if function not in DERIVED_FEATURES:
                self.problem(
                    line_of(item, line),
                    f"model '{name}': unknown derived feature '{function}'"
                    f"{did_you_mean(str(function), tuple(DERIVED_FEATURES))} — use one of "
                    f"{', '.join(DERIVED_FEATURES)}",
                )
                continue
            found = self.derived_one(str(function), argument, name, spec, line_of(item, line))
            if found is not None:
                out.append(found)
        return tuple(out)

    def derived_one(
        self, function: str, argument: Any, name: str, spec: TypeSpec, line: int
    ) -> Derived | None:
        """One ``function: field`` (``differs: [a, b]``), checked against the fields."""
        paired = function in PAIRED
        fields = argument if paired and isinstance(argument, list) else [argument]
        if paired and len(fields) != 2:
            self.problem(
                line, f"model '{name}': {function} compares two fields, e.g. {{{function}: [a, b]}}"
            )
            return None
        kinds = " or ".join(DERIVED_FEATURES[function])
        for field_name in fields:
            target, through_array = (
                spec.path(field_name) if isinstance(field_name, str) else (None, False)
            )
            over_arrays = function in OVER_ARRAYS
            if target is None or target.type not in DERIVED_FEATURES[function]:
                where = " inside an array of objects (e.g. items.price)" if over_arrays else ""
                wanted = f"{kinds} field{where}"
            elif through_array != over_arrays:
                wanted = (
                    f"{kinds} field inside an array of objects (e.g. items.price)"
                    if over_arrays
                    else f"{kinds} field outside arrays"
                )
            else:
                continue
            self.problem(
                line,
                f"model '{name}': {function} needs a {wanted} of '{spec.name}', "
                f"not {describe(field_name)}",
            )
            return None
        return Derived(function, str(fields[0]), str(fields[1]) if paired else None)

    def text_fields(
        self, data: LineMap, name: str, spec: TypeSpec, kind: ModelKind
    ) -> tuple[str, ...]:
        value = data.get("text")
        if kind == "tabular":
            if value is not None:
                self.problem(key_line(data, "text"), f"model '{name}' is tabular: drop 'text'")
            return ()
        if value is None:
            found = spec.text_fields
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            found = tuple(value)
        else:
            raise self.fail(
                key_line(data, "text"), f"model '{name}': text must be a list of fields"
            )
        if not found:
            raise self.fail(
                data.line,
                f"text model '{name}' has no text to read — mark a string field 'text: true' "
                f"in '{spec.name}' or list fields under 'text:'",
            )
        for field_name in found:
            target = spec.field(field_name)
            if target is None or target.type != "string":
                self.problem(
                    key_line(data, "text"),
                    f"text model '{name}' reads '{field_name}', which is not a string field "
                    f"of '{spec.name}'",
                )
        return found


def _shorthand(body: Any, line: int) -> Any:
    """``amount: number`` is short for ``amount: {type: number}``."""
    if not isinstance(body, str):
        return body
    data = LineMap({"type": body})
    data.line, data.key_lines, data.duplicate_keys = line, {}, []
    return data


def read_declaration(
    path: Path, display: str | None = None
) -> tuple[TypeSpec | None, list[Problem]]:
    """One declaration file: its ``TypeSpec`` (None when unusable) and every problem."""
    shown = display or str(path)
    reader = _Reader(shown)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reader.problem(None, f"cannot read the file ({exc}) — save it as UTF-8")
        return None, reader.problems
    try:
        data = yaml.load(text, Loader=LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reader.problem(
            mark.line + 1 if mark else None,
            f"YAML syntax error: {exc.problem or exc.context or 'invalid YAML'} — fix the "
            "indentation or quoting there",
        )
        return None, reader.problems
    except yaml.YAMLError as exc:
        reader.problem(None, f"YAML error: {exc} — fix the file's syntax")
        return None, reader.problems
    if not isinstance(data, LineMap):
        reader.problem(1, "the file is not a mapping — start it with 'type: <name>'")
        return None, reader.problems
    try:
        spec = reader.read(data)
    except Invalid:
        return None, reader.problems
    return (spec if not reader.problems else None), reader.problems
