"""Shared building blocks of every event contract: the base class and checked field types.

Everything an event carries is checked here, at the edge, so the rest of the flow
(features, rules, store) can trust what it gets. Each check fails with a sentence that
names the value and the fix, because these messages end up on the dead-letter topic
where an integrator reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime
from decimal import Decimal
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    NaiveDatetime,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

# Active ISO 4217 codes of the currencies a business is likely to settle in. Kept as
# data, not fetched, so validation never depends on the network.
_CURRENCY_CODES = """
    AED ARS AUD BGN BRL CAD CHF CLP CNY COP CZK DKK EGP EUR GBP HKD HUF IDR ILS INR
    ISK JPY KES KRW MAD MXN MYR NGN NOK NZD PEN PHP PKR PLN QAR RON RSD SAR SEK SGD
    THB TRY TWD UAH USD VND ZAR
"""
CURRENCIES: frozenset[str] = frozenset(_CURRENCY_CODES.split())

# Every officially assigned ISO 3166-1 alpha-2 code (249).
_COUNTRY_CODES = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ
    BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
    CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ
    DE DJ DK DM DO DZ
    EC EE EG EH ER ES ET
    FI FJ FK FM FO FR
    GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY
    HK HM HN HR HT HU
    ID IE IL IM IN IO IQ IR IS IT
    JE JM JO JP
    KE KG KH KI KM KN KP KR KW KY KZ
    LA LB LC LI LK LR LS LT LU LV LY
    MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ
    NA NC NE NF NG NI NL NO NP NR NU NZ
    OM
    PA PE PF PG PH PK PL PM PN PR PS PT PW PY
    QA
    RE RO RS RU RW
    SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ
    TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ
    UA UG UM US UY UZ
    VA VC VE VG VI VN VU
    WF WS
    YE YT
    ZA ZM ZW
"""
COUNTRIES: frozenset[str] = frozenset(_COUNTRY_CODES.split())

MAX_ATTRIBUTES = 50
# An event type's name (and a declared model's or label's): it names topics and routes.
TYPE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
MAX_ATTRIBUTE_CHARS = 256


def _check_currency(value: str) -> str:
    if value in CURRENCIES:
        return value
    if value.upper() in CURRENCIES:
        raise PydanticCustomError(
            "currency_case",
            "currency code '{code}' must be upper case: send '{upper}'",
            {"code": value, "upper": value.upper()},
        )
    raise PydanticCustomError(
        "currency_unknown",
        "unknown currency code '{code}': use an ISO 4217 code such as EUR, USD or GBP",
        {"code": value[:16]},
    )


def _check_country(value: str) -> str:
    if value in COUNTRIES:
        return value
    if value.upper() in COUNTRIES:
        raise PydanticCustomError(
            "country_case",
            "country code '{code}' must be upper case: send '{upper}'",
            {"code": value, "upper": value.upper()},
        )
    raise PydanticCustomError(
        "country_unknown",
        "unknown country code '{code}': use an ISO 3166-1 alpha-2 code such as DE, US or GB",
        {"code": value[:16]},
    )


def _require_timezone(
    value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
) -> datetime:
    return _timezone_checked(value, handler, info.field_name or "time")


def _timezone_checked(value: Any, handler: ValidatorFunctionWrapHandler, name: str) -> datetime:
    try:
        result: datetime = handler(value)
    except ValidationError as exc:
        # pydantic's own wording ("Input should have timezone info") does not tell the
        # sender what to change; every other datetime error is already clear enough.
        if any(err["type"] == "timezone_aware" for err in exc.errors()):
            raise PydanticCustomError(
                "timezone_aware",
                "{field} has no timezone: send an ISO-8601 time with an offset, "
                "e.g. 2026-01-31T12:00:00Z",
                {"field": name},
            ) from None
        raise
    return result


def timestamp_named(name: str) -> Any:
    """A ``Timestamp`` whose timezone error names ``name`` (a field read under an alias)."""

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> datetime:
        return _timezone_checked(value, handler, name)

    return Annotated[AwareDatetime, WrapValidator(check)]


def limit_text(max_chars: int) -> AfterValidator:
    """Refuse text longer than ``max_chars`` with its length, the limit and the fix.

    Use beside ``Field(min_length=1, json_schema_extra={"maxLength": ...})`` so the
    exported JSON Schema still states the limit.
    """

    def check(value: str, info: ValidationInfo) -> str:
        if len(value) > max_chars:
            raise PydanticCustomError(
                "text_too_long",
                "{field} is {length} characters; the limit is {limit}: shorten it, "
                "or send long content as a link",
                {
                    "field": info.field_name or "text",
                    "length": f"{len(value):,}",
                    "limit": f"{max_chars:,}",
                },
            )
        return value

    return AfterValidator(check)


CurrencyCode = Annotated[
    str,
    AfterValidator(_check_currency),
    Field(json_schema_extra={"enum": sorted(CURRENCIES)}),
]
CountryCode = Annotated[
    str,
    AfterValidator(_check_country),
    Field(json_schema_extra={"enum": sorted(COUNTRIES)}),
]
Timestamp = Annotated[AwareDatetime, WrapValidator(_require_timezone)]
EventId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
]
PartyId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Money = Annotated[float, Field(ge=0, allow_inf_nan=False)]
AttributeKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
AttributeValue = (
    float | int | bool | Annotated[str, StringConstraints(max_length=MAX_ATTRIBUTE_CHARS)]
)
Attributes = Annotated[dict[AttributeKey, AttributeValue], Field(max_length=MAX_ATTRIBUTES)]


class Contract(BaseModel):
    """Base of every message Arbiter reads or writes: unknown fields refused, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EventCore(Contract):
    """What every event carries inside Arbiter: an idempotency key and a time.

    Declared event types (``app.declarations``) build on this; a declaration may call
    the id and time fields something else in the payload.
    """

    event_type: ClassVar[str]

    event_id: EventId
    occurred_at: Timestamp

    @property
    def partition_key(self) -> str:
        """The Kafka key: events of one customer/account stay in order on one partition."""
        raise NotImplementedError(f"{type(self).__name__} does not name its partition key")


class EventBase(EventCore):
    """An event with a free ``attributes`` mapping of extra values beside its fields.

    ``attributes`` holds extra numeric or categorical fields that models may use later
    without a schema change.
    """

    attributes: Attributes = Field(default_factory=dict)


FieldKind = Literal["number", "string", "boolean", "datetime", "array", "object", "any"]


def model_field_kinds(model: type[BaseModel]) -> dict[str, FieldKind]:
    """Every dotted field path of ``model`` mapped to its kind, derived from the model.

    Nested models and mappings add ``parent.child`` paths; list items and mapping values
    use ``*`` as the segment (``items.*.sku``). Rule validation uses this to refuse
    unknown fields and comparisons of the wrong type.
    """
    kinds: dict[str, FieldKind] = {}
    for name, info in model.model_fields.items():
        _walk(info.alias or name, info.annotation, kinds)
    return kinds


def _walk(path: str, annotation: Any, kinds: dict[str, FieldKind]) -> FieldKind:
    kinds[path] = "any"  # reserve the slot so a parent is listed before its children
    kind = _kind_of(path, annotation, kinds)
    kinds[path] = kind
    return kind


def _kind_of(path: str, annotation: Any, kinds: dict[str, FieldKind]) -> FieldKind:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return _kind_of(path, args[0], kinds)
    if origin in (Union, UnionType):
        return _union_kind(path, args, kinds)
    if origin is Literal:
        found = {_scalar_kind(type(arg)) for arg in args}
        return found.pop() if len(found) == 1 else "any"
    if isinstance(origin, type):
        return _container_kind(path, origin, args, kinds)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, info in annotation.model_fields.items():
            _walk(f"{path}.{info.alias or name}", info.annotation, kinds)
        return "object"
    return _scalar_kind(annotation) if isinstance(annotation, type) else "any"


def _union_kind(path: str, members: tuple[Any, ...], kinds: dict[str, FieldKind]) -> FieldKind:
    present = [arg for arg in members if arg is not type(None)]
    # Paths below a union are only meaningful when every member agrees on its kind.
    found = {_kind_of(path, arg, {}) for arg in present}
    if len(found) != 1:
        return "any"
    return _kind_of(path, present[0], kinds)


def _container_kind(
    path: str, origin: type, args: tuple[Any, ...], kinds: dict[str, FieldKind]
) -> FieldKind:
    if issubclass(origin, Mapping):
        _walk(f"{path}.*", args[1] if len(args) == 2 else Any, kinds)
        return "object"
    if issubclass(origin, Sequence | AbstractSet):
        _walk(f"{path}.*", args[0] if args else Any, kinds)
        return "array"
    return "any"


# Checked in order: bool is an int subclass, str is a Sequence.
_SCALAR_KINDS: tuple[tuple[tuple[type, ...], FieldKind], ...] = (
    ((bool,), "boolean"),
    ((int, float, Decimal), "number"),
    ((str,), "string"),
    ((datetime, AwareDatetime, NaiveDatetime), "datetime"),
    ((Mapping,), "object"),
    ((Sequence, AbstractSet), "array"),
)


def _scalar_kind(cls: type) -> FieldKind:
    for types, kind in _SCALAR_KINDS:
        if issubclass(cls, types):
            return kind
    return "any"
