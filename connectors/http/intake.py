"""Request bodies to events and outcomes: the pure part of the ingest routes.

A body is one JSON object or a JSON array of them. Each item is validated by the same
decoder as the Kafka path (``app.core.decode``), so an HTTP client gets the reason
codes and sentences a dead letter would carry. No I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from app.core.decode import decode_event, decode_outcome
from app.core.stages import guess_event_id
from app.declarations.spec import LabelSpec
from app.errors import InvalidEvent
from schemas import EventCore, Outcome

T = TypeVar("T")


class BadBody(Exception):
    """The body as a whole is unusable (not JSON, too many items): 400 or 413."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


@dataclass(frozen=True)
class Accepted(Generic[T]):
    index: int
    item: T
    raw: bytes


@dataclass(frozen=True)
class ItemError:
    index: int
    reason: str
    detail: str
    event_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "reason": self.reason, "detail": self.detail}
        if self.event_id is not None:
            out["event_id"] = self.event_id
        return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_error(raw: bytes) -> BadBody | None:
    """Why ``raw`` is not JSON, with the line, column and character position; None if it is."""
    try:
        json.loads(raw, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        return BadBody(
            400,
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno} "
            f"(character {exc.pos})",
            line=exc.lineno,
            column=exc.colno,
            position=exc.pos,
        )
    except UnicodeDecodeError as exc:
        return BadBody(
            400,
            f"the body is not UTF-8 text: byte {exc.start} cannot be decoded; "
            "encode the JSON as UTF-8",
            position=exc.start,
        )
    except (ValueError, RecursionError) as exc:
        return BadBody(400, f"the body is not valid JSON: {str(exc)[:200]}")
    return None


def split_body(raw: bytes, *, max_items: int) -> list[bytes]:
    """The body's items as separate JSON documents: itself for an object (the bytes as
    sent), each element for an array. Raises ``BadBody`` for malformed JSON, an empty
    array or more than ``max_items`` items."""
    if not raw.strip():
        raise BadBody(400, "the body is empty: send a JSON object or a JSON array of them")
    bad = json_error(raw)
    if bad is not None:
        raise bad
    data = json.loads(raw)
    if not isinstance(data, list):
        return [raw]
    if not data:
        raise BadBody(422, "the body is an empty array: send at least one item")
    if len(data) > max_items:
        raise BadBody(
            413,
            f"the body holds {len(data):,} items; one request takes at most {max_items:,} "
            "(ARBITER_HTTP_MAX_BATCH): split it into several requests",
        )
    return [json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode() for item in data]


def _check(
    items: Sequence[bytes], decode: Callable[[bytes], T]
) -> tuple[list[Accepted[T]], list[ItemError]]:
    accepted: list[Accepted[T]] = []
    errors: list[ItemError] = []
    for index, raw in enumerate(items):
        try:
            accepted.append(Accepted(index, decode(raw), raw))
        except InvalidEvent as exc:
            errors.append(ItemError(index, exc.reason, exc.detail, guess_event_id(raw)))
    return accepted, errors


def check_events(
    event_type: str,
    items: Sequence[bytes],
    *,
    max_bytes: int,
    models: Mapping[str, type[EventCore]],
) -> tuple[list[Accepted[EventCore]], list[ItemError]]:
    """Validate each item as an event of ``event_type``, as the consumer would."""
    return _check(
        items, lambda raw: decode_event(event_type, raw, max_bytes=max_bytes, models=models)
    )


def check_outcomes(
    event_type: str,
    items: Sequence[bytes],
    *,
    max_bytes: int,
    labels: Sequence[LabelSpec] | None = None,
) -> tuple[list[Accepted[Outcome]], list[ItemError]]:
    """Validate each item as an outcome about an ``event_type`` event (its labels against
    the declared ``labels`` when given)."""
    return _check(
        items, lambda raw: decode_outcome(event_type, raw, max_bytes=max_bytes, labels=labels)
    )
