"""The live dashboard: the page at ``/``, its JSON at ``/dashboard/data``, rule texts,
dead-letter payloads, and the training reports under ``/reports/``.

The page (``static/dashboard.html`` + ``.js`` + ``.css``, no build step, nothing fetched
from outside) polls ``/dashboard/data`` every two seconds. The page shell holds no data
and is open; its data needs ``dashboard:read`` (or ``admin``) when auth is on, and a
dead letter's payload needs ``admin``. Everything is read-only.

Reports need ``dashboard:read`` too, but the page opens them in a new tab, which cannot
send its key: so the data hands out report links signed for that key (``links.py``), and
the first signed request leaves the signature in a cookie scoped to the report's folder,
so the chart files the page links to by relative URL open as well.
"""

from __future__ import annotations

import asyncio
import mimetypes
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from app.settings import Settings
from app.store.keys import ADMIN
from app.store.outbox import OutboxStore
from app.store.training import TrainingStore
from app.trainer.monitor import DriftLimits
from connectors.http import dashboard_data as data
from connectors.http import links
from connectors.http.auth import (
    AuthConfig,
    Caller,
    authorize,
    presented_key,
    require,
    throttle,
    unauthorized,
)
from connectors.http.errors import Problem
from connectors.http.state import ApiState

log = structlog.get_logger("arbiter.dashboard")

STATIC = Path(__file__).parent / "static"
MODELS_TTL_S = 30.0  # drift reads up to drift_window decisions per model: not every poll
MODELS_WARMUP_TTL_S = 2.0  # until the drift windows are full (see ``data.models_ttl``)
TRAINING_RUNS_SHOWN = 10
FAILED_DELIVERIES_SHOWN = 20
# The page loads only its own files; our SVG charts are inlined, so no img/font sources.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# A report is one page with inline CSS and SVG, plus the same charts as .svg files.
REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
REPORT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".csv": "text/csv; charset=utf-8",
    ".json": "application/json",
}
REPORT_COOKIE = "arbiter_report"
REPORT_REFUSED = (
    "this report needs a key with 'dashboard:read': open it from the dashboard (its report "
    f"links are signed for {links.TTL_S // 60} minutes; reload the dashboard for a fresh "
    "one) or send 'Authorization: Bearer <key>'"
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
        "auth": state.settings.http.auth,
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
        "training_runs": data.training_rows(
            runs, state.settings.reports_dir, await _signer(request, caller)
        ),
        "failed_deliveries": data.delivery_rows(failed),
        "charts": data.charts(series, latency),
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def _models(request: Request, state: ApiState) -> list[dict[str, Any]]:
    cache: DashboardState = request.app.state.dashboard
    async with cache.models_lock:
        if not cache.models.fresh(time.monotonic()):
            s = state.settings
            limits = DriftLimits(s.drift.window, s.drift.psi_threshold, s.drift.auc_drop)
            c = state.components
            models = await data.models_in_service(
                c.ledger.engine, c.registry, limits, c.types.catalog()
            )
            ttl = data.models_ttl(models, s.drift.window, MODELS_TTL_S, MODELS_WARMUP_TTL_S)
            cache.models = data.Timed(models, time.monotonic(), ttl)
        return cache.models.value


async def _signer(request: Request, caller: Caller) -> data.Signer | None:
    """Signs report links for ``caller``'s key; None when auth is off (links need none)."""
    config: AuthConfig = request.app.state.auth
    if not config.required or caller.key_prefix is None:
        return None
    found = await config.keys.by_prefix(caller.key_prefix)
    if found is None:  # revoked since it authenticated this request
        return None
    prefix, secret = found[0].prefix, found[1]
    expires = int(time.time()) + links.TTL_S
    return lambda path: links.sign(path, prefix, secret, expires)


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


@router.api_route("/reports/{path:path}", methods=["GET", "HEAD"])
async def report_file(
    request: Request,
    path: str,
    sig: str | None = None,
    presented: str | None = Depends(presented_key),
) -> FileResponse:
    """A file of a training report: with auth on, for a ``dashboard:read`` key in the
    header, a valid ``sig`` for the report's folder, or the cookie a signed request left."""
    state: ApiState = request.app.state.api
    relative = links.clean(path)
    if relative is None:
        raise Problem(404, "no such report file: report paths stay inside the reports folder")
    config: AuthConfig = request.app.state.auth
    keep: links.Signature | None = None
    if config.required:
        if presented:
            await authorize(request, presented, "dashboard:read")
        else:
            keep = await _signed(request, config, relative, sig)
    file = _report_file(state.settings.reports_dir, relative)
    if file is None:
        raise Problem(404, "no such report file: open reports from the dashboard's list")
    headers = {
        "Content-Security-Policy": REPORT_CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",  # a signed URL never leaves in a Referer
        "Cache-Control": "private, no-cache" if config.required else "no-cache",
    }
    response = FileResponse(file, media_type=_report_type(file), headers=headers)
    if keep is not None and sig is not None:
        response.set_cookie(
            REPORT_COOKIE,
            sig,
            max_age=links.seconds_left(keep, time.time()),
            path=quote("/reports/" + links.folder(relative)),
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
    return response


async def _signed(
    request: Request, config: AuthConfig, relative: str, sig: str | None
) -> links.Signature | None:
    """Let the request through on its signature (query first, then cookie): the query's
    Signature when that is what opened it, to be kept in the cookie; raises 401 otherwise."""
    now = time.time()
    for token, from_query in ((sig, True), (request.cookies.get(REPORT_COOKIE), False)):
        signature = links.parse(token) if token else None
        if signature is None:
            continue
        found = await config.keys.by_prefix(signature.prefix)
        if found is None:
            continue
        key, secret = found
        if key.allows("dashboard:read") and links.verify(signature, relative, secret, now):
            throttle(config, Caller.of(key))
            return signature if from_query else None
    raise unauthorized(REPORT_REFUSED)


def _report_file(root: Path, relative: str) -> Path | None:
    """The file ``relative`` names under ``root``, or None when it is missing or resolves
    outside (a symlink out of the folder)."""
    try:
        base = root.resolve()
        found = (base / relative).resolve()
    except (OSError, RuntimeError):
        return None
    if not found.is_relative_to(base) or not found.is_file():
        return None
    return found


def _report_type(file: Path) -> str:
    known = REPORT_TYPES.get(file.suffix.lower())
    if known is not None:
        return known
    guessed, _ = mimetypes.guess_type(file.name)
    return guessed or "application/octet-stream"
