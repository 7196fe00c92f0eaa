"""``arbiter models …`` and ``arbiter explain``: the registry and the reasons, as tables.

Thin: each command builds settings, calls one function of ``app.ops.models`` and
prints what it returns with rich.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from app.cli.options import build_settings, console, run_async
from app.store.registry import ModelRecord

models_app = typer.Typer(
    no_args_is_help=True,
    help="The model registry: list, show, promote, roll back, shadow.",
)

# The metric shown first for a kind of model in `models list`.
HEADLINE = {"binary": ("roc_auc", "pr_auc"), "multiclass": ("accuracy", "macro_f1")}


def _status(record: ModelRecord) -> str:
    colour = {"champion": "bold green", "challenger": "yellow", "retired": "dim"}[record.status]
    shadow = " [cyan](shadow)[/]" if record.shadow else ""
    return f"[{colour}]{record.status}[/]{shadow}"


def _metrics(record: ModelRecord, keys: tuple[str, ...] | None = None) -> str:
    m = record.meta.metrics
    chosen = keys if keys is not None else HEADLINE.get(record.meta.kind, ())
    return "  ".join(f"{k} {m[k]:.3f}" for k in chosen if k in m)


def _window(record: ModelRecord) -> str:
    start, end = record.meta.window_start[:10], record.meta.window_end[:10]
    return f"{start} → {end}" if start or end else "—"


@models_app.command("list")
def models_list(
    name: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
) -> None:
    """Every registered version with its status and headline metrics."""
    settings = build_settings()
    from app.ops.models import list_models

    records = run_async(lambda: list_models(settings, name))
    if not records:
        console.print("no models registered yet: `arbiter run` registers the first ones")
        return
    table = Table(title="Model registry", title_justify="left")
    for column in ("model", "version", "status", "created", "training window", "metrics"):
        table.add_column(column)
    for r in records:
        table.add_row(
            r.name, r.meta.tag, _status(r), r.meta.created_at[:19], _window(r), _metrics(r)
        )
    console.print(table)


@models_app.command("show")
def models_show(name: Annotated[str, typer.Argument(help="e.g. transaction.fraud")]) -> None:
    """One model: every version's metrics, parameters, files and the registry's history."""
    settings = build_settings()
    from app.ops.models import show_model

    detail = run_async(lambda: show_model(settings, name))
    console.print(f"[bold]{escape(name)}[/]  artifacts: {escape(detail.artifacts_dir)}")
    for r in reversed(detail.versions):
        console.print(
            f"\n[bold]{r.meta.tag}[/] {_status(r)}  family {r.meta.family} ({r.meta.kind})  "
            f"created {r.meta.created_at[:19]}  window {_window(r)}"
        )
        console.print(f"  trained on: {escape(r.meta.trained_on)}")
        metrics = Table(show_header=True, box=None, padding=(0, 2))
        metrics.add_column("metric")
        metrics.add_column("value", justify="right")
        for key, value in sorted(r.meta.metrics.items()):
            metrics.add_row(key, f"{value:.4g}")
        console.print(metrics)
        if r.meta.params:
            console.print(f"  params: {escape(json.dumps(r.meta.params, sort_keys=True)[:400])}")
        shown = ", ".join(r.meta.features[:12])
        more = f" … (+{len(r.meta.features) - 12})" if len(r.meta.features) > 12 else ""
        console.print(f"  features ({len(r.meta.features)}): {escape(shown)}{more}")
        if r.meta.classes:
            console.print(f"  classes: {escape(', '.join(r.meta.classes))}")
        for file, digest in sorted(r.meta.files.items()):
            console.print(f"  file {escape(r.artifact_path)}/{escape(file)}  sha256 {digest[:16]}…")
    _print_runs(detail.runs)
    _print_drift(detail.drift)
    if detail.events:
        history = Table(title="history (newest first)", title_justify="left")
        for column in ("at", "version", "action", "detail"):
            history.add_column(column)
        for e in detail.events:
            history.add_row(
                e.at.isoformat(timespec="seconds"),
                f"v{e.version}" if e.version is not None else "",
                e.action,
                escape(e.detail[:120]),
            )
        console.print(history)


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="e.g. transaction.fraud")],
    version: Annotated[int, typer.Argument(help="The version number to put in service.")],
) -> None:
    """Make VERSION the champion (files verified first); consumers swap within seconds."""
    settings = build_settings()
    from app.ops.models import promote

    record = run_async(lambda: promote(settings, name, version))
    console.print(f"{escape(name)} {record.meta.tag} is the champion")


@models_app.command("rollback")
def models_rollback(name: Annotated[str, typer.Argument(help="e.g. transaction.fraud")]) -> None:
    """Retire the champion and bring back the version that served before it."""
    settings = build_settings()
    from app.ops.models import rollback

    retired, restored = run_async(lambda: rollback(settings, name))
    console.print(
        f"{escape(name)}: {retired.meta.tag} retired, {restored.meta.tag} is the champion again"
    )


@models_app.command("shadow")
def models_shadow(
    name: Annotated[str, typer.Argument(help="e.g. transaction.fraud")],
    version: Annotated[int, typer.Argument(help="A challenger version.")],
    off: Annotated[bool, typer.Option("--off", help="Take it out of shadow.")] = False,
) -> None:
    """Score beside the champion with VERSION, logging its scores; it never decides."""
    settings = build_settings()
    from app.ops.models import shadow

    record = run_async(lambda: shadow(settings, name, version, not off))
    state = "in shadow" if record.shadow else "out of shadow"
    console.print(f"{escape(name)} {record.meta.tag} is {state}")


def explain(event_id: Annotated[str, typer.Argument(help="The event's event_id.")]) -> None:
    """Why an event got its decision: the rules that fired and what drove each score."""
    settings = build_settings()
    from app.ops.models import explain as explain_event

    result = run_async(lambda: explain_event(settings, event_id))
    d = result.decision
    console.print(
        f"[bold]{escape(d.event_id)}[/] ({d.event_type}) → [bold]{escape(d.decision)}[/]  "
        f"decided {d.decided_at.isoformat(timespec='seconds')}  rules {d.ruleset_version or '—'}"
    )
    console.print("[bold]rules fired[/]: " + (escape(", ".join(d.rules_fired)) or "none (default)"))
    for reason in d.reasons:
        console.print(f"  • {escape(reason)}")
    scores = Table(title="scores and what drove them", title_justify="left")
    for column in ("model", "version", "score", "method", "top contributions"):
        scores.add_column(column)
    for name, explanation in sorted(d.explanations.items()):
        key = name.split(".", 1)[-1]
        value = d.scores.get(key, "?")
        top = ", ".join(f"{t[0]} {float(t[1]):+.3f}" for t in explanation.get("top", []))
        top = top or str(explanation.get("detail", ""))
        scores.add_row(
            name,
            str(d.model_versions.get(name, "?")),
            f"{value:.4f}" if isinstance(value, float) else escape(str(value)),
            str(explanation.get("method", "?")),
            escape(top),
        )
    console.print(scores)
    for name, words in sorted(result.word_explanations.items()):
        if words.get("error"):
            console.print(f"{name}: words not available ({escape(str(words['error']))})")
            continue
        top = ", ".join(f"{escape(str(w))} {float(c):+.3f}" for w, c in words.get("top", []))
        console.print(f"{name}: words that moved the label ({words.get('method')}): {top}")
    if d.shadow_scores:
        console.print(f"[cyan]shadow[/]: {escape(json.dumps(d.shadow_scores, sort_keys=True))}")


def _print_runs(runs: list[Any]) -> None:
    if not runs:
        console.print("\ntraining runs: none yet (the trainer runs when outcomes arrive)")
        return
    table = Table(title="training runs (newest first)", title_justify="left")
    for column in ("run", "started", "trigger", "result", "versions", "reason"):
        table.add_column(column)
    for run in runs:
        versions = (
            f"v{run.champion_version or '—'} → v{run.challenger_version}"
            if run.challenger_version
            else ""
        )
        table.add_row(
            str(run.id),
            run.started_at.isoformat(timespec="seconds"),
            run.trigger,
            run.status,
            versions,
            escape(run.reason[:140]),
        )
    console.print(table)
    for run in runs:
        if run.report:  # on a line of its own: a path must not be wrapped in a table cell
            console.print(f"run {run.id} report: {escape(run.report)}", soft_wrap=True)


def _print_drift(status: Any) -> None:
    head = f"\n[bold]drift[/] of the champion ({status.decisions:,} recent decisions, "
    head += f"{status.labelled:,} with outcomes)"
    console.print(head)
    if status.note:
        console.print(f"  {escape(status.note)}")
    for feature, value in sorted(status.psi.items(), key=lambda kv: -kv[1]):
        level = "[red]alert[/]" if value >= 0.25 else "[yellow]notice[/]" if value >= 0.1 else "ok"
        console.print(f"  PSI {escape(feature)}: {value:.3f} {level}")
    report = status.report
    if report is not None and report.label_rate is not None:
        reference = report.reference_label_rate
        console.print(
            f"  label rate: {report.label_rate:.3%} recent"
            + (f" vs {reference:.3%} in training" if reference is not None else "")
        )
    if status.recent_auc is not None:
        console.print(
            f"  ROC-AUC on recent outcomes: {status.recent_auc:.3f}"
            + (f" (holdout {status.holdout_auc:.3f})" if status.holdout_auc is not None else "")
        )
    for reason in status.reasons:
        console.print(f"  [red]drifting[/]: {escape(reason)}")
