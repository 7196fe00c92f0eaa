"""What the dashboard shows: bounded reads of the store, and pure functions that turn
them into the JSON the page renders (``dashboard.py`` holds the routes).

Every read is limited to a recent window and capped in rows, so a poll every two seconds
stays cheap on SQLite and PostgreSQL however large the ledger grows. Rates and latency
are bucketed here in Python from one indexed range read (``decided_at``), which avoids
dialect-specific time bucketing in SQL.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.declarations.spec import DeclaredModel
from app.rules.language.spec import RuleSet
from app.store.ledger import percentiles
from app.store.outbox import Delivery
from app.store.registry import ModelRegistry
from app.store.tables import ORIGIN_DECIDED
from app.store.tables import dead_letters as dl_table
from app.store.tables import decisions as dec_table
from app.store.training import TrainingRun
from app.trainer.monitor import DriftLimits, DriftStatus, measure
from app.trainer.report.plots import Series, line_chart
from connectors.http import links

WINDOW = timedelta(minutes=10)  # how far back rates and latency look
RATE_WINDOW_S = 60  # the "now" rate: decisions in the last minute / 60
RATE_BUCKET_S = 10  # rate chart resolution
MAX_ROWS = 20_000  # cap on recent decisions read per poll
TOP_RULES_FROM = 2_000  # top rules: the most recent N decisions
TOP_RULES_SHOWN = 10
DEAD_LETTERS_SHOWN = 50
DEAD_LETTERS_FOR_RATE = 5_000
PAYLOAD_LIMIT = 64 * 1024
SNIPPET_MAX_LINES = 60


@dataclass(frozen=True)
class RecentDecision:
    event_type: str
    decision: str
    latency_ms: float
    decided_at: datetime
    rules_fired: tuple[str, ...]


@dataclass(frozen=True)
class DeadLetterSummary:
    id: int
    event_type: str
    reason: str
    detail: str
    created_at: datetime
    size: int


@dataclass(frozen=True)
class Payload:
    """A dead letter's raw bytes as escaped text, cut at ``PAYLOAD_LIMIT`` bytes."""

    text: str
    size: int
    truncated: bool


@dataclass(frozen=True)
class Timed:
    """A value with the monotonic time it was computed and how long it may be kept (the
    models cache)."""

    value: list[dict[str, Any]] = field(default_factory=list)
    at: float = float("-inf")
    ttl_s: float = 0.0

    def fresh(self, now: float) -> bool:
        return now - self.at < self.ttl_s


def models_ttl(
    models: Sequence[Mapping[str, Any]], window: int, full_s: float, short_s: float
) -> float:
    """How long the models block may be cached: ``full_s`` once every champion's drift was
    measured on a full window of ``window`` decisions (more decisions change it little),
    ``short_s`` before that — just after start-up each new decision changes it, and with
    few decisions a recomputation is cheap."""
    champions = [m for m in models if m.get("champion") is not None]
    full = bool(champions) and all(
        int(m.get("drift", {}).get("decisions") or 0) >= window for m in champions
    )
    return full_s if full else short_s


# --- reads --------------------------------------------------------------------------


async def recent_decisions(engine: AsyncEngine, since: datetime) -> list[RecentDecision]:
    """Decisions decided at or after ``since``, newest first, at most ``MAX_ROWS``."""
    c = dec_table.c
    query = (
        sa.select(c.event_type, c.decision, c.latency_ms, c.decided_at, c.rules_fired)
        .where(c.decided_at >= since)
        .order_by(c.decided_at.desc())
        .limit(MAX_ROWS)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        RecentDecision(
            r.event_type,
            r.decision,
            float(r.latency_ms),
            r.decided_at,
            tuple(str(x) for x in r.rules_fired or ()),
        )
        for r in rows
    ]


async def total_decisions(engine: AsyncEngine) -> dict[tuple[str, str], int]:
    """Decisions per (event_type, decision) since the start (one grouped count); history
    brought in by ``arbiter import`` is not a decision and is left out."""
    c = dec_table.c
    query = (
        sa.select(c.event_type, c.decision, sa.func.count())
        .where(c.origin == ORIGIN_DECIDED)
        .group_by(c.event_type, c.decision)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return {(a, b): int(n) for a, b, n in rows}


async def recent_dead_letters(engine: AsyncEngine, limit: int) -> list[DeadLetterSummary]:
    """The newest dead letters (by id: the primary key, so no scan), without payloads."""
    c = dl_table.c
    query = (
        sa.select(
            c.id,
            c.event_type,
            c.reason,
            sa.func.substr(c.detail, 1, 500).label("detail"),
            c.created_at,
            sa.func.length(c.raw).label("size"),
        )
        .order_by(c.id.desc())
        .limit(limit)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        DeadLetterSummary(int(r.id), r.event_type, r.reason, r.detail, r.created_at, int(r.size))
        for r in rows
    ]


async def dead_letter_payload(engine: AsyncEngine, dead_letter_id: int) -> Payload | None:
    """The payload of one dead letter, or None when there is no such id."""
    c = dl_table.c
    query = sa.select(sa.func.length(c.raw), sa.func.substr(c.raw, 1, PAYLOAD_LIMIT)).where(
        c.id == dead_letter_id
    )
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        return None
    size, head = int(row[0]), bytes(row[1] or b"")
    return payload_text(head, size)


# --- pure ---------------------------------------------------------------------------


def payload_text(raw: bytes, size: int | None = None) -> Payload:
    """Raw bytes as HTML-escaped text (invalid UTF-8 shown as U+FFFD), cut at the limit."""
    size = len(raw) if size is None else size
    head = raw[:PAYLOAD_LIMIT]
    text = html.escape(head.decode("utf-8", errors="replace"))
    return Payload(text, size, size > len(head))


def rates(
    decisions: Sequence[RecentDecision],
    dead: Sequence[DeadLetterSummary],
    now: datetime,
    window_s: int = RATE_WINDOW_S,
) -> dict[str, dict[str, float]]:
    """Per type, decisions/s and events/s (decisions + dead letters) over the last
    ``window_s`` seconds."""
    since = now - timedelta(seconds=window_s)
    decided = Counter(d.event_type for d in decisions if d.decided_at > since)
    dropped = Counter(d.event_type for d in dead if d.created_at > since)
    return {
        t: {
            "decisions_per_s": round(decided[t] / window_s, 3),
            "events_per_s": round((decided[t] + dropped[t]) / window_s, 3),
        }
        for t in sorted(set(decided) | set(dropped))
    }


def rate_series(
    decisions: Sequence[RecentDecision], now: datetime, bucket_s: int = RATE_BUCKET_S
) -> dict[str, list[tuple[float, float]]]:
    """Per type, (minutes before now, decisions/s) per ``bucket_s`` bucket over ``WINDOW``."""
    n = int(WINDOW.total_seconds()) // bucket_s
    counts: dict[str, list[int]] = {}
    for d in decisions:
        age = (now - d.decided_at).total_seconds()
        slot = int(age // bucket_s)
        if 0 <= slot < n:
            counts.setdefault(d.event_type, [0] * n)[slot] += 1
    return {
        t: [(-(i + 0.5) * bucket_s / 60, c / bucket_s) for i, c in reversed(list(enumerate(cs)))]
        for t, cs in sorted(counts.items())
    }


def latency_series(
    decisions: Sequence[RecentDecision], now: datetime
) -> dict[str, list[tuple[float, float]]]:
    """p50 and p99 of ``latency_ms`` per minute over ``WINDOW`` (x: minutes before now)."""
    by_minute: dict[int, list[float]] = {}
    for d in decisions:
        minute = int((now - d.decided_at).total_seconds() // 60)
        if 0 <= minute < WINDOW.total_seconds() // 60:
            by_minute.setdefault(minute, []).append(d.latency_ms)
    out: dict[str, list[tuple[float, float]]] = {"p50": [], "p99": []}
    for minute in sorted(by_minute, reverse=True):
        found = percentiles(sorted(by_minute[minute]), (0.5, 0.99))
        out["p50"].append((-(minute + 0.5), round(found[0.5], 3)))
        out["p99"].append((-(minute + 0.5), round(found[0.99], 3)))
    return out


def decision_mix(totals: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """Decisions per type and decision, most frequent first."""
    mix: dict[str, dict[str, int]] = {}
    for (event_type, decision), n in sorted(totals.items(), key=lambda kv: (kv[0][0], -kv[1])):
        mix.setdefault(event_type, {})[decision] = n
    return mix


def top_rules(
    decisions: Sequence[RecentDecision], limit: int = TOP_RULES_SHOWN
) -> list[dict[str, Any]]:
    """The rules that fired most in the newest ``TOP_RULES_FROM`` decisions."""
    hits = Counter(
        (d.event_type, rule) for d in decisions[:TOP_RULES_FROM] for rule in d.rules_fired
    )
    return [
        {"event_type": t, "rule": rule, "hits": n, "link": rule_link(t, rule)}
        for (t, rule), n in sorted(hits.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    ]


def rule_link(event_type: str, rule: str) -> str:
    return f"/dashboard/rules/{quote(event_type, safe='')}/{quote(rule, safe='')}"


def rule_snippet(rulesets: Mapping[str, RuleSet], event_type: str, name: str) -> str | None:
    """``file:line`` and the rule's YAML block from its file; None for an unknown rule."""
    ruleset = rulesets.get(event_type)
    rule = next((r for r in ruleset.rules if r.name == name), None) if ruleset else None
    if rule is None:
        return None
    where = (
        rule.source.file if rule.source.line is None else f"{rule.source.file}:{rule.source.line}"
    )
    if rule.source.line is None:
        return f"# {where}\n"
    try:
        lines = Path(rule.source.file).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        return f"# {where}\n# the file cannot be read now ({type(exc).__name__})\n"
    return f"# {where}\n" + "\n".join(yaml_block(lines, rule.source.line)) + "\n"


def yaml_block(lines: Sequence[str], line: int) -> list[str]:
    """The YAML item starting at 1-based ``line``: that line and the ones indented deeper
    (blank lines kept), at most ``SNIPPET_MAX_LINES``, trailing blanks dropped."""
    if not 1 <= line <= len(lines):
        return []
    first = lines[line - 1]
    indent = len(first) - len(first.lstrip(" "))
    block = [first]
    for text in lines[line:]:
        stripped = text.lstrip(" ")
        if stripped and len(text) - len(stripped) <= indent:
            break
        block.append(text)
        if len(block) >= SNIPPET_MAX_LINES:
            break
    while block and not block[-1].strip():
        block.pop()
    return block


Signer = Callable[[str], str]  # a report path under the reports folder -> its ``sig``


def report_link(report: str, reports_dir: Path, sign: Signer | None = None) -> str | None:
    """The ``/reports/...`` URL of a training report path, if it lies under the folder;
    with ``sign``, carrying the signature that opens it without a header."""
    if not report:
        return None
    try:
        relative = Path(report).resolve().relative_to(reports_dir.resolve()).as_posix()
    except ValueError:
        return None
    url = "/reports/" + quote(relative)
    return url if sign is None else f"{url}?{links.PARAM}={sign(relative)}"


def charts(
    series: Mapping[str, list[tuple[float, float]]],
    latency: Mapping[str, list[tuple[float, float]]],
) -> dict[str, str]:
    """The rate and latency charts as SVG strings (our renderer escapes every text)."""
    minutes = WINDOW.total_seconds() / 60
    top_rate = max((y for points in series.values() for _, y in points), default=0.0)
    rate = line_chart(
        [Series(t, [x for x, _ in p], [y for _, y in p]) for t, p in series.items()],
        title="Decisions per second by type",
        x_label="minutes ago",
        y_label="decisions/s",
        x_range=(-minutes, 0.0),
        y_range=(0.0, max(1.0, top_rate * 1.1)),
    )
    top_latency = max((y for points in latency.values() for _, y in points), default=0.0)
    lat = line_chart(
        [Series(k, [x for x, _ in p], [y for _, y in p]) for k, p in latency.items() if p],
        title="Decision latency (ms) per minute",
        x_label="minutes ago",
        y_label="ms",
        x_range=(-minutes, 0.0),
        y_range=(0.0, max(1.0, top_latency * 1.1)),
    )
    return {"rate": rate, "latency": lat}


# --- models, training runs, webhooks ------------------------------------------------


async def models_in_service(
    engine: AsyncEngine,
    registry: ModelRegistry,
    limits: DriftLimits,
    catalog: Mapping[str, DeclaredModel],
) -> list[dict[str, Any]]:
    """Each model's champion and shadows, its headline metrics and drift now."""
    out: list[dict[str, Any]] = []
    for name, serving in (await registry.in_service()).items():
        champion = await registry.champion(name) if serving.champion is not None else None
        try:
            status = await measure(engine, registry, name, limits, catalog.get(name))
        except Exception as exc:  # one model's drift must not blank the page
            status = DriftStatus(
                name,
                serving.champion,
                0,
                0,
                None,
                None,
                None,
                note=f"drift not measured ({type(exc).__name__})",
            )
        metrics = champion.meta.metrics if champion is not None else {}
        out.append(
            {
                "name": name,
                "champion": serving.champion,
                "shadows": list(serving.shadows),
                "metrics": {k: round(float(v), 4) for k, v in list(metrics.items())[:6]},
                "drift": {
                    "drifting": status.drifting,
                    "reasons": list(status.reasons),
                    "note": status.note,
                    "decisions": status.decisions,
                    "labelled": status.labelled,
                    "recent_auc": status.recent_auc,
                    "holdout_auc": status.holdout_auc,
                    "worst_psi": max(status.psi.values(), default=None),
                },
            }
        )
    return out


def training_rows(
    runs: Sequence[TrainingRun], reports_dir: Path, sign: Signer | None = None
) -> list[dict[str, Any]]:
    return [
        {
            "id": r.id,
            "model": r.model,
            "trigger": r.trigger,
            "status": r.status,
            "started_at": r.started_at.isoformat(),
            "finished_at": r.finished_at.isoformat() if r.finished_at else None,
            "champion_version": r.champion_version,
            "challenger_version": r.challenger_version,
            "reason": r.reason,
            "report": report_link(r.report, reports_dir, sign),
        }
        for r in runs
    ]


def delivery_rows(failed: Sequence[Delivery]) -> list[dict[str, Any]]:
    return [
        {
            "id": d.id,
            "event_id": d.event_id,
            "endpoint": d.endpoint,
            "attempts": d.attempts,
            "last_status": d.last_status,
            "last_error": d.last_error,
            "created_at": d.created_at.isoformat(),
        }
        for d in failed
    ]


def dead_letter_rows(dead: Sequence[DeadLetterSummary]) -> list[dict[str, Any]]:
    return [
        {
            "id": d.id,
            "event_type": d.event_type,
            "reason": d.reason,
            "detail": d.detail,
            "created_at": d.created_at.isoformat(),
            "size": d.size,
        }
        for d in dead[:DEAD_LETTERS_SHOWN]
    ]
