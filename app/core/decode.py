"""First stage of the flow: raw bytes from Kafka or HTTP become a validated event.

Pure (no I/O). Anything that cannot become an event raises
:class:`app.errors.InvalidEvent` with a stable ``reason`` code, used as a metric label
and on the dead-letter topic, and a ``detail`` sentence that tells the sender what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from app.declarations.labels import label_problems
from app.declarations.spec import LabelSpec
from app.errors import InvalidEvent
from schemas import EventCore, Outcome

MAX_LISTED_ERRORS = 5
MAX_INPUT_REPR = 40


def decode_event(
    event_type: str,
    raw: bytes,
    *,
    max_bytes: int,
    models: Mapping[str, type[EventCore]],
) -> EventCore:
    """Parse and validate ``raw`` as an event of ``event_type`` (one of ``models``: the
    served types' decoders, ``app.declarations.EventTypes.models``).

    Raises ``InvalidEvent`` with reason ``unknown_type``, ``oversize``,
    ``malformed_json``, ``not_an_object`` or ``validation``.
    """
    model = models.get(event_type)
    if model is None:
        raise InvalidEvent(
            "unknown_type",
            f"unknown event type {event_type[:64]!r}; known types are {', '.join(sorted(models))}",
        )
    if len(raw) > max_bytes:
        raise InvalidEvent(
            "oversize",
            f"event is {len(raw):,} bytes; the limit is {max_bytes:,} "
            "(ARBITER_MAX_EVENT_BYTES): send large content as a link, or raise the limit",
        )
    try:
        # One pass in Rust for the common, valid case; the error kinds are told apart
        # only when something is wrong.
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _classify(exc, raw) from None


def decode_outcome(
    event_type: str,
    raw: bytes,
    *,
    max_bytes: int,
    labels: Sequence[LabelSpec] | None = None,
) -> Outcome:
    """Parse and validate ``raw`` from ``outcomes.<event_type>`` as an ``Outcome``.

    Raises ``InvalidEvent`` like ``decode_event``, and ``wrong_type`` when the outcome
    is about another event type than its topic's. With ``labels`` (the type's declared
    labels), a label it does not declare, or a value of the wrong kind, is refused.
    """
    if len(raw) > max_bytes:
        raise InvalidEvent(
            "oversize",
            f"outcome is {len(raw):,} bytes; the limit is {max_bytes:,} "
            "(ARBITER_MAX_EVENT_BYTES): send only the labels",
        )
    try:
        outcome = Outcome.model_validate_json(raw)
    except ValidationError as exc:
        raise _classify(exc, raw) from None
    if outcome.event_type != event_type:
        raise InvalidEvent(
            "wrong_type",
            f"an outcome about a {outcome.event_type} event arrived on the {event_type} "
            f"outcomes topic: send it to outcomes.{outcome.event_type}",
        )
    if labels is not None:
        problems = label_problems(event_type, labels, outcome.labels)
        if problems:
            raise InvalidEvent("validation", "; ".join(problems))
    return outcome


def _classify(exc: ValidationError, raw: bytes) -> InvalidEvent:
    errors = exc.errors(include_url=False)
    top = errors[0] if len(errors) == 1 and not errors[0]["loc"] else None
    if top is not None and top["type"] == "json_invalid":
        return InvalidEvent("malformed_json", _json_problem(top, raw))
    if top is not None and top["type"] == "model_type":
        return InvalidEvent(
            "not_an_object",
            f"the event is a JSON {_json_kind(top['input'])}; send a JSON object "
            '({"event_id": ..., "occurred_at": ..., ...})',
        )
    return InvalidEvent("validation", describe_validation_error(exc))


def _json_problem(error: ErrorDetails, raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return (
            f"the event is not UTF-8 text: byte 0x{raw[bad.start]:02x} at offset {bad.start} "
            "cannot be decoded; encode the JSON as UTF-8"
        )
    ctx = error.get("ctx") or {}
    where = str(ctx.get("error", error["msg"]))
    return f"the event is not valid JSON: {where}"


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each failing field, its problem and (briefly) what was sent.

    ``"amount: Input should be greater than or equal to 0 (got -12.5); currency: ..."``,
    listing at most five errors and then how many more there are.
    """
    errors = exc.errors(include_url=False)
    parts = [_describe_one(error) for error in errors[:MAX_LISTED_ERRORS]]
    if len(errors) > MAX_LISTED_ERRORS:
        parts.append(f"and {len(errors) - MAX_LISTED_ERRORS} more")
    return "; ".join(parts)


def _describe_one(error: ErrorDetails) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "event"
    message = error["msg"]
    if error["type"] == "missing":
        return f"{where}: {message}"
    shown = _short_repr(error.get("input"))
    if shown in message:
        return f"{where}: {message}"
    return f"{where}: {message} (got {shown})"


def _short_repr(value: Any) -> str:
    text = repr(value)
    if len(text) <= MAX_INPUT_REPR:
        return text
    return text[: MAX_INPUT_REPR - 3] + "..."
