"""``build_api``: the FastAPI application over the running service's parts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request, Response
from prometheus_client import Counter, Histogram

from app.settings import Settings
from app.store.keys import KeyStore
from connectors.http import dashboard, openapi, ops, routes_v1
from connectors.http.asyncapi import asyncapi_document
from connectors.http.auth import AuthConfig
from connectors.http.decide import Decider
from connectors.http.errors import Problem, problem_response
from connectors.http.limits import RateLimiter
from connectors.http.state import ApiState, Readiness, Running

log = structlog.get_logger("arbiter.api")

HTTP_REQUESTS = Counter(
    "arbiter_http_requests_total",
    "HTTP API requests by route template, method and status code.",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "arbiter_http_request_seconds",
    "HTTP API request time by route template (body read to response).",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

DeliveriesFor = Callable[[str], Awaitable[list[dict[str, Any]]]]


def build_api(
    components: Running,
    keys: KeyStore,
    settings: Settings,
    *,
    deliveries: DeliveriesFor = routes_v1.deliveries_for,
) -> FastAPI:
    """The API over ``components``; ``app.state.api.readiness.draining = True`` makes
    /readyz answer 503 (set it when shutdown starts)."""
    decider = Decider(components.processor)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await decider.aclose()

    api = FastAPI(
        title="Arbiter",
        version="0.1.0",
        summary="Events in, decisions out: ingest, synchronous decisions, outcomes.",
        lifespan=lifespan,
    )
    api.state.api = ApiState(
        settings=settings,
        components=components,
        ledger=components.ledger,
        publish=components.publish,
        decider=decider,
        deliveries=deliveries,
        readiness=Readiness(),
    )
    api.state.auth = AuthConfig(
        keys=keys,
        limiter=RateLimiter(settings.http.rate_per_s, settings.http.rate_burst),
        required=settings.http.auth,
    )
    api.state.asyncapi = asyncapi_document(settings)
    openapi.install(api, components.types.models)
    api.add_exception_handler(Problem, problem_response)
    api.include_router(ops.router)
    api.include_router(routes_v1.router)
    dashboard.install(api, settings)
    api.middleware("http")(_observe)
    if not settings.http.auth:
        log.warning(
            "HTTP API authentication is OFF (ARBITER_HTTP_AUTH=false): anyone who can reach "
            "it may send events and read decisions — for local demos only"
        )
    return api


async def _observe(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    template = getattr(route, "path", "unmatched")
    HTTP_REQUESTS.labels(template, request.method, str(response.status_code)).inc()
    HTTP_SECONDS.labels(template).observe(time.perf_counter() - started)
    return response
