"""The live dashboard: the page at ``/``, its JSON at ``/dashboard/data``, rule texts,
dead-letter payloads, and the training reports under ``/reports/``.

The page (``static/dashboard.html`` + ``.js`` + ``.css``, no build step, nothing fetched
from outside) polls ``/dashboard/data`` every two seconds. The page shell holds no data
and is open; its data needs ``dashboard:read`` (or ``admin``) when auth is on, and a
dead letter's payload needs ``admin``. Everything is read-only.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from app.api import dashboard_data as data
from app.api.auth import Caller, require
from app.api.errors import Problem
from app.api.state import ApiState
from app.settings import Settings
from app.store.keys import ADMIN
from app.store.outbox import OutboxStore
from app.store.training import TrainingStore
from app.trainer.monitor import DriftLimits

log = structlog.get_logger("arbiter.dashboard")

STATIC = Path(__file__).parent / "static"
MODELS_TTL_S = 30.0  # drift reads up to drift_window decisions per model: not every poll
TRAINING_RUNS_SHOWN = 10
FAILED_DELIVERIES_SHOWN = 20
# The page loads only its own files; our SVG charts are inlined, so no img/font sources.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


@dataclass
class DashboardState:
    models: data.Timed = field(default_factory=data.Timed)
    models_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def install(api: FastAPI, settings: Settings) -> None:
    """Add the dashboard routes, its static files and the reports folder to ``api``."""
    api.state.dashboard = DashboardState()
    api.include_router(router)
    api.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
    try:
        settings.reports_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("reports folder unavailable: report links will 404", error=str(exc))
        return
    # StaticFiles refuses paths that resolve outside the folder (``..``, symlinks).
    api.mount("/reports", StaticFiles(directory=settings.reports_dir), name="reports")


@router.get("/")
async def page() -> FileResponse:
    """The dashboard page (a shell: it holds no data, so it is open)."""
    return FileResponse(
        STATIC / "dashboard.html",
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
    )


@router.get("/dashboard/data")
async def dashboard_data(
    request: Request,
    caller: Caller = Depends(require("dashboard:read")),  # noqa: B008
) -> JSONResponse:
    """Everything the page shows, recomputed from the store on each call."""
    state: ApiState = request.app.state.api
    engine = state.ledger.engine
    now = datetime.now(UTC)
    recent = await data.recent_decisions(engine, now - data.WINDOW)
    dead = await data.recent_dead_letters(engine, data.DEAD_LETTERS_FOR_RATE)
    totals = await data.total_decisions(engine)
    dead_totals = await state.ledger.dead_letter_counts()
    runs = await TrainingStore(engine).runs(limit=TRAINING_RUNS_SHOWN)
    failed = await OutboxStore(engine).recent(status="failed", limit=FAILED_DELIVERIES_SHOWN)
    series = data.rate_series(recent, now)
    latency = data.latency_series(recent, now)
    by_type: dict[str, int] = {}
    for (event_type, _), n in totals.items():
        by_type[event_type] = by_type.get(event_type, 0) + n
    dead_by_type: dict[str, int] = {}
    reasons: dict[str, dict[str, int]] = {}
    for (event_type, reason), n in dead_totals.items():
        dead_by_type[event_type] = dead_by_type.get(event_type, 0) + n
        reasons.setdefault(event_type, {})[reason] = n
    body: dict[str, Any] = {
        "generated_at": now.isoformat(),
        "window_minutes": int(data.WINDOW.total_seconds() // 60),
        "auth": state.settings.api_auth,
        "can_read_payloads": ADMIN in caller.scopes,
        "types": sorted(set(state.settings.event_types) | set(by_type) | set(dead_by_type)),
        "totals": {"decisions": by_type, "dead_letters": dead_by_type},
        "rates": data.rates(recent, dead, now),
        "latency": latency,
        "mix": data.decision_mix(totals),
        "top_rules": data.top_rules(recent),
        "dead_letters": data.dead_letter_rows(dead),
        "dead_letter_reasons": reasons,
        "models": await _models(request, state),
        "training_runs": data.training_rows(runs, state.settings.reports_dir),
        "failed_deliveries": data.delivery_rows(failed),
        "charts": data.charts(series, latency),
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def _models(request: Request, state: ApiState) -> list[dict[str, Any]]:
    cache: DashboardState = request.app.state.dashboard
    async with cache.models_lock:
        if not cache.models.fresh(MODELS_TTL_S):
            s = state.settings
            limits = DriftLimits(s.drift_window, s.drift_psi_threshold, s.drift_auc_drop)
            c = state.components
            cache.models = data.Timed(
                await data.models_in_service(c.ledger.engine, c.registry, limits),
                time.monotonic(),
            )
        return cache.models.value


@router.get("/dashboard/rules/{event_type}/{rule}")
async def rule_text(
    request: Request,
    event_type: str,
    rule: str,
    _caller: Caller = Depends(require("dashboard:read")),  # noqa: B008
) -> PlainTextResponse:
    """The rule's ``file:line`` and its YAML block, as plain text."""
    state: ApiState = request.app.state.api
    text = data.rule_snippet(state.components.rules.rulesets, event_type, rule)
    if text is None:
        raise Problem(404, f"no rule '{rule}' in the {event_type!r} ruleset in service")
    return PlainTextResponse(text, headers={"X-Content-Type-Options": "nosniff"})


@router.get("/dashboard/dead-letters/{dead_letter_id}")
async def dead_letter(
    request: Request,
    dead_letter_id: int,
    _caller: Caller = Depends(require(ADMIN)),  # noqa: B008
) -> PlainTextResponse:
    """The dead letter's raw bytes as HTML-escaped UTF-8 text, cut at 64 KiB."""
    state: ApiState = request.app.state.api
    found = await data.dead_letter_payload(state.ledger.engine, dead_letter_id)
    if found is None:
        raise Problem(404, f"no dead letter {dead_letter_id}")
    return PlainTextResponse(
        found.text,
        headers={
            "X-Content-Type-Options": "nosniff",
            "X-Payload-Bytes": str(found.size),
            "X-Payload-Truncated": "true" if found.truncated else "false",
        },
    )
