"""The OpenAPI document, with the served event types' payloads from their declarations.

The routes take a raw body (one event or a JSON array, checked item by item), so FastAPI
cannot see what an event looks like. Here each served type's schema (compiled from
``schemas/<type>.yaml``) joins ``components.schemas``; ``{event_type}`` becomes an enum of
the served types; the ingest and decide bodies name the schemas they accept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from schemas import EventCore, Outcome

REF = "#/components/schemas/{model}"
INGEST = ("/v1/events/{event_type}", "/v1/outcomes/{event_type}")
DECIDE = "/v1/decide/{event_type}"


def install(api: FastAPI, models: Mapping[str, type[EventCore]]) -> None:
    """Make ``api.openapi()`` describe ``models`` (the served types, by name)."""
    api.openapi = _builder(api, dict(models))  # type: ignore[method-assign]


def _builder(api: FastAPI, models: dict[str, type[EventCore]]) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = document(api, models)
        return api.openapi_schema

    return openapi


def document(api: FastAPI, models: Mapping[str, type[EventCore]]) -> dict[str, Any]:
    doc = get_openapi(
        title=api.title,
        version=api.version,
        summary=api.summary,
        description=api.description,
        routes=api.routes,
    )
    names = sorted(models)
    keyed = [(name, models[name]) for name in names]
    refs, defs = models_json_schema(
        [(model, "validation") for _, model in keyed] + [(Outcome, "validation")],
        ref_template=REF,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(defs.get("$defs", {}))
    event_refs = [refs[(model, "validation")] for _, model in keyed]
    outcome_ref = refs[(Outcome, "validation")]
    for path, item in doc.get("paths", {}).items():
        post = item.get("post")
        if post is None or "{event_type}" not in path:
            continue
        for parameter in post.get("parameters", []):
            if parameter.get("name") == "event_type":
                parameter["schema"] = {"type": "string", "enum": names}
                parameter["description"] = "A served event type (declared in schemas/)."
        one = {"oneOf": event_refs} if len(event_refs) > 1 else event_refs[0]
        if path == "/v1/outcomes/{event_type}":
            one = outcome_ref
        body = one if path == DECIDE else {"oneOf": [one, {"type": "array", "items": one}]}
        post["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return doc
