"""The checked values a declaration file turns into: an event type, its labels, its models.

``reader.py`` builds these from YAML (refusing what it cannot use, with file, line and
fix); ``build.py`` compiles a ``TypeSpec`` into the pydantic model that decodes events.
Plain frozen dataclasses: nothing here reads files or knows pydantic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

FieldType = Literal["string", "integer", "number", "boolean", "enum", "datetime", "object", "array"]
FIELD_TYPES: tuple[FieldType, ...] = (
    "string",
    "integer",
    "number",
    "boolean",
    "enum",
    "datetime",
    "object",
    "array",
)
# Named checks a string field can ask for (``format: currency``).
STRING_FORMATS = ("currency", "country")
LabelType = Literal["boolean", "enum", "number"]
LABEL_TYPES: tuple[LabelType, ...] = ("boolean", "enum", "number")
ModelKind = Literal["tabular", "text"]
MODEL_KINDS: tuple[ModelKind, ...] = ("tabular", "text")
UnknownFields = Literal["reject", "keep"]
# Derived features a model may ask for, and the field kinds each one reads. ``sum`` and
# ``max`` read a number inside an array of objects (``items.quantity``); ``differs``
# compares two fields (``{differs: [country, card_country]}``): 1 when they differ.
DERIVED_FEATURES: dict[str, tuple[FieldType, ...]] = {
    "log": ("number", "integer"),
    "hour_of_day": ("datetime",),
    "day_of_week": ("datetime",),
    "is_night": ("datetime",),
    "vs_recent_mean": ("number", "integer"),
    "length": ("string",),
    "sum": ("number", "integer"),
    "max": ("number", "integer"),
    "differs": ("string", "enum", "number", "integer", "boolean"),
}
OVER_ARRAYS = ("sum", "max")  # the derived features that read inside an array
PAIRED = ("differs",)  # the derived features that read two fields
NIGHT_END_HOUR = 6  # is_night: 00:00-05:59 UTC
# The id, key and time that every event carries inside Arbiter, whatever a declaration
# calls them in the payload.
ID_FIELD = "event_id"
TIME_FIELD = "occurred_at"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a declaration; ``message`` says what and how to fix it."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class FieldSpec:
    """One field of an event (or of an object inside it)."""

    name: str
    type: FieldType
    line: int
    required: bool = True
    description: str | None = None
    minimum: float | None = None  # number, integer
    maximum: float | None = None
    min_length: int | None = None  # string (characters), array (items)
    max_length: int | None = None
    pattern: str | None = None  # string
    format: str | None = None  # string: one of STRING_FORMATS
    values: tuple[str | int | float | bool, ...] = ()  # enum
    text: bool = False  # string: free text a text model may read
    items: FieldSpec | None = None  # array
    fields: tuple[FieldSpec, ...] = ()  # object

    def child(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)


@dataclass(frozen=True)
class LabelSpec:
    """A label an outcome of this type carries (``outcomes.<type>``)."""

    name: str
    type: LabelType
    line: int
    values: tuple[str, ...] = ()  # enum


@dataclass(frozen=True)
class Derived:
    """A derived feature: ``function`` applied to ``field`` (``log: amount``)."""

    function: str
    field: str  # a dotted path for ``sum``/``max`` (``items.quantity``)
    other: str | None = None  # the second field of ``differs``

    @property
    def name(self) -> str:
        """The feature's column: ``log(amount)``, ``differs(country,card_country)``."""
        fields = self.field if self.other is None else f"{self.field},{self.other}"
        return f"{self.function}({fields})"


@dataclass(frozen=True)
class ModelSpec:
    """A model of this type: what it predicts, from which features, by which kind."""

    name: str
    label: str
    kind: ModelKind
    line: int
    positive: tuple[str | bool | float, ...] = ()  # binary: which label values are positive
    classes: tuple[str, ...] = ()  # multi-class: the label's classes
    include: tuple[str, ...] = ()  # empty: every field
    exclude: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()  # kept whatever feature selection finds
    derived: tuple[Derived, ...] = ()
    text: tuple[str, ...] = ()  # text kind: the text fields it reads, in order
    fallback: str | None = None  # a boolean label that says it when ``label`` is absent
    # What a wrong call costs (a yes/no model): (false positive, false negative).
    costs: tuple[float, float] | None = None

    @property
    def multi_class(self) -> bool:
        return bool(self.classes)


@dataclass(frozen=True)
class TypeSpec:
    """A whole declaration: one event type, its fields, labels and models."""

    name: str
    file: str
    line: int
    fields: tuple[FieldSpec, ...]
    id_field: str = ID_FIELD
    key_field: str = "customer_id"
    time_field: str | None = None  # None: the arrival time is the event time
    unknown_fields: UnknownFields = "reject"
    description: str | None = None
    attributes: bool = True  # the free ``attributes`` bag of extra values
    labels: tuple[LabelSpec, ...] = ()
    models: tuple[ModelSpec, ...] = ()
    # A complete, valid event: the base of rule tests (`tests:` in rule files) and docs.
    example: dict[str, Any] | None = None
    example_line: int | None = None

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    def path(self, dotted: str) -> tuple[FieldSpec | None, bool]:
        """The field at a dotted path (``device.kind``, ``items.quantity``: through an
        array to its items' field) and whether the path passes through an array."""
        head, *rest = dotted.split(".")
        found, arrays = self.field(head), False
        for part in rest:
            if found is not None and found.type == "array" and found.items is not None:
                found, arrays = found.items, True
            found = found.child(part) if found is not None else None
        return found, arrays

    def label(self, name: str) -> LabelSpec | None:
        return next((lab for lab in self.labels if lab.name == name), None)

    @property
    def text_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.text)


@dataclass(frozen=True)
class DeclaredModel:
    """One model of a declared type, as the trainer and the scorer know it: named
    ``<type>.<model>``, writing the score ``scores.<model>``. Plain data: it travels to
    the trainer's child process."""

    event_type: str
    spec: ModelSpec
    declaration: TypeSpec

    @property
    def name(self) -> str:
        return f"{self.event_type}.{self.spec.name}"

    @property
    def family(self) -> str:
        return self.spec.kind

    @property
    def score(self) -> str:
        return self.spec.name

    @property
    def label(self) -> LabelSpec:
        found = self.declaration.label(self.spec.label)
        if found is None:  # the reader refuses such a declaration
            raise ValueError(f"{self.name} predicts the undeclared label {self.spec.label!r}")
        return found


def model_catalog(declarations: Iterable[TypeSpec]) -> dict[str, DeclaredModel]:
    """Every declared model by name (``<type>.<model>``), in declaration order."""
    return {
        f"{spec.name}.{model.name}": DeclaredModel(spec.name, model, spec)
        for spec in declarations
        for model in spec.models
    }
