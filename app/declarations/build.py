"""Compiling a declaration into the pydantic model that decodes its events.

The compiled model is an ordinary pydantic model (validation runs in pydantic-core, as
fast as a hand-written one), built on ``schemas.EventCore``: inside Arbiter every event
has ``event_id``, ``occurred_at`` and ``partition_key`` whatever the payload calls them.
A declared id or time field with another name is read and written under its own name
(aliases); with ``time: arrival`` the event time is the moment it was decoded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, cast

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, create_model
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from app.declarations.spec import ID_FIELD, TIME_FIELD, FieldSpec, TypeSpec
from schemas.common import (
    MAX_ATTRIBUTE_CHARS,
    MAX_ATTRIBUTES,
    AttributeKey,
    Contract,
    CountryCode,
    CurrencyCode,
    EventCore,
    EventId,
    Timestamp,
    limit_text,
    timestamp_named,
)

TEXT_MARK = "x-arbiter-text"
MAX_KEY_CHARS = 128


@dataclass(frozen=True)
class Limits:
    """Caps that are settings rather than part of a declaration (``ARBITER_SCHEMAS_*``)."""

    max_attributes: int = MAX_ATTRIBUTES
    max_attribute_chars: int = MAX_ATTRIBUTE_CHARS


Extra = Literal["allow", "forbid"]


class DeclaredEvent(EventCore):
    """Base of every compiled declaration; ``declaration`` is the spec it came from."""

    declaration: ClassVar[TypeSpec]
    key_field: ClassVar[str]

    @property
    def partition_key(self) -> str:
        return str(getattr(self, self.key_field))


def _arrival() -> datetime:
    return datetime.now(UTC)


def build_model(spec: TypeSpec, limits: Limits | None = None) -> type[DeclaredEvent]:
    """The pydantic model of ``spec`` (already checked by the reader)."""
    extra: Extra = "allow" if spec.unknown_fields == "keep" else "forbid"
    fields: dict[str, Any] = {}
    for fspec in spec.fields:
        if fspec.name == spec.id_field:
            fields[ID_FIELD] = (EventId, _field(fspec, internal=ID_FIELD))
        elif fspec.name == spec.time_field:
            fields[TIME_FIELD] = (timestamp_named(fspec.name), _field(fspec, internal=TIME_FIELD))
        elif fspec.name == spec.key_field and fspec.type == "string":
            # The ledger keeps the key in a column of MAX_KEY_CHARS.
            capped = min(fspec.max_length or MAX_KEY_CHARS, MAX_KEY_CHARS)
            fields[fspec.name] = _annotation(replace(fspec, max_length=capped), extra, spec.name)
        else:
            fields[fspec.name] = _annotation(fspec, extra, spec.name)
    if spec.time_field is None:
        fields[TIME_FIELD] = (
            Timestamp,
            Field(
                default_factory=_arrival,
                description="When the event arrived (this type declares no event time).",
            ),
        )
    if spec.attributes:
        fields["attributes"] = (_attributes(limits or Limits()), Field(default_factory=dict))
    config = ConfigDict(
        extra=extra,
        frozen=True,
        populate_by_name=True,
        serialize_by_alias=True,
        title=spec.name,
    )
    base = type(f"{_class_name(spec.name)}Base", (DeclaredEvent,), {"model_config": config})
    model = cast(
        "type[DeclaredEvent]",
        create_model(
            _class_name(spec.name),
            __base__=base,
            __doc__=spec.description or f"The '{spec.name}' event, declared in {spec.file}.",
            **fields,
        ),
    )
    model.event_type = spec.name
    model.declaration = spec
    model.key_field = spec.key_field
    return model


def _attributes(limits: Limits) -> Any:
    """The free ``attributes`` mapping, its caps from the settings that name them."""

    def count(value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > limits.max_attributes:
            raise PydanticCustomError(
                "too_many_attributes",
                "attributes has {count} keys; the limit is {limit} "
                "(ARBITER_SCHEMAS_MAX_ATTRIBUTES): raise it, or declare the values as "
                "fields of the type (docs/events.md)",
                {"count": len(value), "limit": limits.max_attributes},
            )
        return value

    def chars(value: str) -> str:
        if len(value) > limits.max_attribute_chars:
            raise PydanticCustomError(
                "attribute_too_long",
                "an attribute value is {length} characters; the limit is {limit} "
                "(ARBITER_SCHEMAS_MAX_ATTRIBUTE_CHARS): shorten it or raise the limit",
                {"length": len(value), "limit": limits.max_attribute_chars},
            )
        return value

    text = Annotated[
        str,
        Field(json_schema_extra={"maxLength": limits.max_attribute_chars}),
        AfterValidator(chars),
    ]
    value = float | int | bool | text
    return Annotated[
        dict[AttributeKey, value],
        Field(json_schema_extra={"maxProperties": limits.max_attributes}),
        AfterValidator(count),
    ]


def _class_name(name: str, suffix: str = "Event") -> str:
    return "".join(part.capitalize() for part in name.split("_")) + suffix


def _field(fspec: FieldSpec, *, internal: str | None = None) -> FieldInfo:
    """The field's description and text mark; under ``internal`` (event_id, occurred_at)
    a payload name that differs becomes the alias it is read and written as."""
    kwargs: dict[str, Any] = {}
    if fspec.description:
        kwargs["description"] = fspec.description
    if fspec.text:
        kwargs["json_schema_extra"] = {TEXT_MARK: True}
    if internal is not None and internal != fspec.name:
        kwargs["alias"] = fspec.name
    if not fspec.required:
        kwargs["default"] = None
    return cast("FieldInfo", Field(**kwargs))


def _annotation(fspec: FieldSpec, extra: Extra, owner: str) -> tuple[Any, FieldInfo]:
    kind = _kind(fspec, extra, owner)
    if not fspec.required:
        kind = kind | None
    return kind, _field(fspec)


def _kind(fspec: FieldSpec, extra: Extra, owner: str) -> Any:  # noqa: PLR0911 - one per type
    if fspec.type == "string":
        return _string(fspec)
    if fspec.type in ("integer", "number"):
        base: Any = int if fspec.type == "integer" else float
        bounds: dict[str, Any] = {"allow_inf_nan": False} if base is float else {}
        if fspec.minimum is not None:
            bounds["ge"] = fspec.minimum if base is float else int(fspec.minimum)
        if fspec.maximum is not None:
            bounds["le"] = fspec.maximum if base is float else int(fspec.maximum)
        return Annotated[base, Field(**bounds)]
    if fspec.type == "boolean":
        return bool
    if fspec.type == "datetime":
        return Timestamp
    if fspec.type == "enum":
        return Literal[fspec.values]
    if fspec.type == "array":
        assert fspec.items is not None
        item = _kind(fspec.items, extra, owner)
        sizes: dict[str, Any] = {}
        if fspec.min_length is not None:
            sizes["min_length"] = fspec.min_length
        if fspec.max_length is not None:
            sizes["max_length"] = fspec.max_length
        return Annotated[list[item], Field(**sizes)]  # type: ignore[valid-type]
    nested = {f.name: _annotation(f, extra, owner) for f in fspec.fields}
    base = type(
        f"{owner}_{fspec.name}_base",
        (Contract,),
        {"model_config": ConfigDict(extra=extra, frozen=True)},
    )
    return create_model(  # type: ignore[call-overload]
        _class_name(f"{owner}_{fspec.name}".replace("[]", "_item"), suffix=""),
        __base__=base,
        **nested,
    )


def _string(fspec: FieldSpec) -> Any:
    if fspec.format == "currency":
        return CurrencyCode
    if fspec.format == "country":
        return CountryCode
    min_length = 1 if fspec.min_length is None else fspec.min_length
    if fspec.max_length is None or not fspec.text:
        # Checked inside pydantic-core: as fast as a hand-written model.
        return Annotated[
            str,
            StringConstraints(
                min_length=min_length, max_length=fspec.max_length, pattern=fspec.pattern
            ),
        ]
    # Free text: the limit is checked by limit_text (its message names the length, the
    # limit and the fix, for senders of long text) and stated in the JSON Schema.
    return Annotated[
        str,
        StringConstraints(min_length=min_length, pattern=fspec.pattern),
        Field(json_schema_extra={"maxLength": fspec.max_length}),
        limit_text(fspec.max_length),
    ]
