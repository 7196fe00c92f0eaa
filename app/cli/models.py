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
def models_show(
    name: Annotated[str, typer.Argument(help="e.g. transaction.fraud")],
    all_: Annotated[
        bool, typer.Option("--all", help="Every version, every feature, every run.")
    ] = False,
) -> None:
    """One model: its versions (settings, calibration, metrics, features), the
    thresholds its champion reaches, its training runs, drift and history."""
    settings = build_settings()
    from app.ops.models import show_model

    detail = run_async(lambda: show_model(settings, name))
    console.print(f"[bold]{escape(name)}[/]  artifacts: {escape(detail.artifacts_dir)}")
    versions = list(reversed(detail.versions))
    shown = versions if all_ else versions[:3]
    for r in shown:
        _print_version(r, detail.runs, all_)
    if len(shown) < len(versions):
        console.print(f"\n… {len(versions) - len(shown)} older version(s): --all shows them")
    champion = next((r for r in detail.versions if r.status == "champion"), None)
    if champion is not None:
        _print_thresholds(champion)
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


def _print_version(r: ModelRecord, runs: list[Any], all_: bool) -> None:
    meta = r.meta
    console.print(
        f"\n[bold]{meta.tag}[/] {_status(r)}  family {meta.family} ({meta.kind})  "
        f"created {meta.created_at[:19]}  window {_window(r)}"
    )
    console.print(f"  trained on: {escape(meta.trained_on)}")
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column("what")
    table.add_column("value")
    for what, value in _settings_rows(meta.params):
        table.add_row(what, escape(value))
    for key in ("roc_auc", "log_loss", "ece", "accuracy", "macro_f1"):
        if key in meta.metrics:
            table.add_row(key, f"{meta.metrics[key]:.4f}")
    if "mean_score" in meta.metrics and "positive_rate" in meta.metrics:
        table.add_row(
            "mean score vs rate",
            f"{meta.metrics['mean_score']:.4f} vs {meta.metrics['positive_rate']:.4f} (holdout)",
        )
    console.print(table)
    limit = None if all_ else 20
    features = list(meta.features)
    listed = ", ".join(features[:limit])
    more = f" … (+{len(features) - 20}: --all lists them)" if limit and len(features) > 20 else ""
    console.print(f"  features ({len(features)}): {escape(listed)}{more}")
    run = next((x for x in runs if x.challenger_version == meta.version), None)
    selection = run.summary.get("selection", {}) if run is not None else {}
    dropped = list(selection.get("dropped", []))
    if dropped:
        listed = ", ".join(dropped[:limit])
        more = f" … (+{len(dropped) - 20})" if limit and len(dropped) > 20 else ""
        console.print(
            f"  dropped ({len(dropped)}, too little information about the label): "
            f"{escape(listed)}{more}"
        )
    if meta.classes:
        console.print(f"  classes: {escape(', '.join(meta.classes))}")
    if all_:
        for file, digest in sorted(meta.files.items()):
            console.print(f"  file {escape(r.artifact_path)}/{escape(file)}  sha256 {digest[:16]}…")


def _settings_rows(params: dict[str, Any]) -> list[tuple[str, str]]:
    """The chosen settings of a version, as lines a person reads (no JSON)."""
    rows: list[tuple[str, str]] = []
    if "estimator" in params:
        chosen = params.get("estimator_params") or {}
        settings = ", ".join(f"{k}={v}" for k, v in sorted(chosen.items())) or "defaults"
        rows.append(("estimator", f"{params['estimator']} ({settings})"))
    calibration = params.get("calibration")
    if isinstance(calibration, dict):
        method = calibration.get("method", "none")
        rows.append(("calibration", f"{method} on {calibration.get('n', 0):,} held-out rows"))
    elif "estimator" in params:
        rows.append(("calibration", "none (trained before calibration: retrain)"))
    if "variant" in params:
        rows.append(("encoder", f"{params.get('encoder', '')} {params['variant']}".strip()))
    if "text" in params:
        rows.append(("reads", ", ".join(str(f) for f in params["text"])))
    if "trainer_run" in params:
        rows.append(("trained by run", str(params["trainer_run"])))
    return rows


def _print_thresholds(champion: ModelRecord) -> None:
    rows = champion.meta.params.get("thresholds") or []
    if not rows:
        return
    table = Table(
        title=f"thresholds of {champion.meta.tag} on its holdout (score >= threshold)",
        title_justify="left",
    )
    for column in ("goal", "threshold", "precision", "recall", "flagged"):
        table.add_column(column, justify="left" if column == "goal" else "right")
    for row in rows:
        table.add_row(
            row["goal"],
            f"{row['threshold']:.4f}",
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['flagged']:.1%}",
        )
    console.print(table)
    for row in rows:
        if "cost_per_event" in row:
            console.print(
                f"  at {row['threshold']:.4f}, the declared costs came to "
                f"{row['cost_per_event']:g} per event on the holdout"
            )


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
