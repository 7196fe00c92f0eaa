"""The ``/v1`` routes: ingest events and outcomes, decide synchronously, read decisions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import structlog
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from app.core.decode import decode_event
from app.core.records import decision_from_record
from app.core.stages import guess_event_id
from app.errors import InvalidEvent, TransientError
from app.values import InRecord, OutMessage
from connectors.http.auth import Caller, require
from connectors.http.errors import Problem
from connectors.http.intake import (
    Accepted,
    BadBody,
    ItemError,
    check_events,
    check_outcomes,
    split_body,
)
from connectors.http.limits import read_body
from connectors.http.state import ApiState
from schemas import Decision, EventCore, Outcome

log = structlog.get_logger("arbiter.api")

router = APIRouter(prefix="/v1")

DeliveriesFor = Callable[[str], Awaitable[list[dict[str, Any]]]]


async def deliveries_for(event_id: str) -> list[dict[str, Any]]:
    """The webhook deliveries of a decision. Empty until the outbox (deliveries table) is
    wired in: ``build_api(..., deliveries=...)`` replaces this."""
    return []


class StoredDecisionView(Decision):
    """A logged decision, whether it is published yet, and its deliveries."""

    published: bool
    deliveries: list[dict[str, Any]]


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


def _known_type(state: ApiState, event_type: str) -> None:
    if event_type not in state.settings.event_types:
        raise Problem(
            404,
            f"unknown event type {event_type[:64]!r}; known types are "
            f"{', '.join(state.settings.event_types)}",
            known_types=list(state.settings.event_types),
        )


async def _items(request: Request, state: ApiState) -> list[bytes]:
    raw = await read_body(request, state.settings.http.max_body_bytes)
    try:
        return split_body(raw, max_items=state.settings.http.max_batch)
    except BadBody as exc:
        raise Problem(exc.status, exc.detail, **exc.extra) from None


def _rejected(errors: Sequence[ItemError], total: int, what: str) -> Problem:
    return Problem(
        422,
        f"{len(errors)} of {total} {what} are invalid; nothing was accepted "
        "(add ?partial=true to accept the valid ones)",
        errors=[e.as_json() for e in errors],
    )


async def _produce(state: ApiState, messages: Sequence[OutMessage]) -> None:
    try:
        await state.publish(messages)
    except TransientError as exc:
        log.warning("produce from the API failed", error=str(exc), records=len(messages))
        raise Problem(
            503,
            "the broker did not accept the records; nothing is guaranteed to be written — "
            "retry (event_ids make a retry safe)",
            headers={"Retry-After": "1"},
        ) from exc


def _ingest_response(
    accepted: Sequence[Accepted[Any]], errors: Sequence[ItemError], ids: list[str]
) -> JSONResponse:
    if errors:
        body = {"accepted": ids, "rejected": [e.as_json() for e in errors]}
        return JSONResponse(body, status_code=207)
    return JSONResponse({"accepted": ids}, status_code=202)


HEADERS = (("arbiter.source", b"http"),)
PARTIAL = Query(False, description="Accept the valid items even when some are invalid (207).")


@router.post("/events/{event_type}", status_code=202)
async def post_events(
    event_type: str,
    request: Request,
    partial: bool = PARTIAL,
    _caller: Caller = Depends(require("events:write")),  # noqa: B008
) -> JSONResponse:
    """One event or a JSON array of events → ``events.<type>`` (keyed by partition key).

    All valid: 202 with their ids. Any invalid: 422 listing each one's index, reason and
    detail, and nothing is written — unless ``partial=true`` (then 207)."""
    return await _ingest(request, event_type, partial, "events")


@router.post("/outcomes/{event_type}", status_code=202)
async def post_outcomes(
    event_type: str,
    request: Request,
    partial: bool = PARTIAL,
    _caller: Caller = Depends(require("outcomes:write")),  # noqa: B008
) -> JSONResponse:
    """One outcome or a JSON array of them → ``outcomes.<type>``; same rules as events."""
    return await _ingest(request, event_type, partial, "outcomes")


async def _ingest(
    request: Request, event_type: str, partial: bool, kind: Literal["events", "outcomes"]
) -> JSONResponse:
    """Check every item of the body; produce the valid ones to ``<kind>.<type>`` — all or
    nothing unless ``partial``."""
    state = _state(request)
    _known_type(state, event_type)
    items = await _items(request, state)
    limit = state.settings.max_event_bytes
    accepted: Sequence[Accepted[EventCore] | Accepted[Outcome]]
    if kind == "events":
        models = state.components.types.models
        accepted, errors = check_events(event_type, items, max_bytes=limit, models=models)
    else:
        labels = state.components.types.spec(event_type).labels
        accepted, errors = check_outcomes(event_type, items, max_bytes=limit, labels=labels)
    if errors and (not partial or not accepted):
        raise _rejected(errors, len(items), kind)
    topic = state.settings.topic(kind, event_type)
    await _produce(
        state,
        [OutMessage(topic, a.item.partition_key.encode(), a.raw, HEADERS) for a in accepted],
    )
    return _ingest_response(accepted, errors, [a.item.event_id for a in accepted])


@router.post("/decide/{event_type}", response_model=Decision)
async def decide(
    event_type: str,
    request: Request,
    _caller: Caller = Depends(require("decide")),  # noqa: B008
) -> JSONResponse:
    """One event → its decision, through the same pipeline and ledger as Kafka.

    Idempotent by ``event_id``: the same id again returns the stored decision (header
    ``Arbiter-Replayed: true``) and is never decided twice."""
    state = _state(request)
    _known_type(state, event_type)
    raw = await read_body(request, state.settings.http.max_body_bytes)
    try:
        event = decode_event(
            event_type,
            raw,
            max_bytes=state.settings.max_event_bytes,
            models=state.components.types.models,
        )
    except InvalidEvent as exc:
        if exc.reason == "malformed_json":
            bad = _malformed(raw)
            if bad is not None:
                raise bad from None
        error = ItemError(0, exc.reason, exc.detail, guess_event_id(raw))
        raise Problem(422, exc.detail, errors=[error.as_json()]) from None
    replay = await state.ledger.find_decisions([event.event_id])
    if event.event_id not in replay or not replay[event.event_id].published:
        record = InRecord(
            event_type=event_type,
            topic=f"http:{state.settings.topic('events', event_type)}",
            partition=-1,
            offset=state.decider.offsets.next(),
            key=event.partition_key.encode(),
            value=raw,
            timestamp_ms=state.decider.offsets.now_ms(),
        )
        try:
            await state.decider.decide(record)
        except TransientError as exc:
            log.warning("decide from the API failed", error=str(exc), event_id=event.event_id)
            raise Problem(
                503, f"deciding failed for now ({exc}); retry", headers={"Retry-After": "1"}
            ) from exc
    stored = await state.ledger.find_decisions([event.event_id])
    found = stored.get(event.event_id)
    if found is None:  # only if the processor refused an event the decoder accepted
        raise Problem(500, "the event was not decided; see the service log")
    body = decision_from_record(found.record).model_dump(mode="json")
    headers = {"Arbiter-Replayed": "true"} if event.event_id in replay else {}
    return JSONResponse(body, headers=headers)


def _malformed(raw: bytes) -> Problem | None:
    from connectors.http.intake import json_error

    bad = json_error(raw)
    return None if bad is None else Problem(bad.status, bad.detail, **bad.extra)


@router.get("/decisions/{event_id}", response_model=StoredDecisionView)
async def get_decision(
    event_id: str,
    request: Request,
    _caller: Caller = Depends(require("decisions:read")),  # noqa: B008
) -> JSONResponse:
    """The logged decision of ``event_id`` with its reasons and deliveries; 404 if none."""
    state = _state(request)
    stored = (await state.ledger.find_decisions([event_id])).get(event_id)
    if stored is None:
        raise Problem(404, f"no decision is logged for event_id {event_id[:64]!r}")
    body = decision_from_record(stored.record).model_dump(mode="json")
    body["published"] = stored.published
    body["deliveries"] = await state.deliveries(event_id)
    return JSONResponse(body)
