"""A type's text models' training run (``job.run_job`` for an event type, e.g.
``ticket``): its heads refit together from labelled events in one encoder pass, each
judged against its own champion on the same holdout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.inference import artifacts, text
from app.inference.loading import load_served
from app.trainer.jobs import drift, fit_text
from app.trainer.jobs.conclude import conclude, windows
from app.trainer.jobs.dataset import Example, NotEnoughData, Split, build_examples, time_split
from app.trainer.jobs.evaluate import PRIMARY, multiclass_metrics, verdict
from app.trainer.jobs.run import Amended, Judgement, ModelResult, Progress, TrainJob
from app.trainer.report.report import Confusion


def run_text(job: TrainJob, say: Progress) -> list[ModelResult]:
    limits = job.limits
    names = job.models
    specs = [text.TextSpec.of(job.declared[n]) for n in names]
    # One dataset for the three heads: tickets whose outcome settles every label.
    per_head: dict[str, dict[str, Example]] = {}
    cleaning: dict[str, dict[str, int]] = {}
    for name in names:
        examples, clean = build_examples(job.declared[name], job.records, max_rows=None)
        per_head[name] = {e.event_id: e for e in examples}
        cleaning[name] = clean.as_dict()
    common = set.intersection(*(set(found) for found in per_head.values()))
    first = per_head[names[0]]
    examples = sorted((first[i] for i in common), key=lambda e: (e.occurred_at, e.event_id))
    examples = examples[-limits.text_max_rows :]
    try:
        split = time_split(
            examples,
            holdout_share=limits.holdout_share,
            min_train=limits.min_train,
            min_holdout=limits.min_holdout,
            need_both_classes=False,
        )
    except NotEnoughData as exc:
        return [
            ModelResult(n, job.run_ids[n], "skipped", str(exc), summary={"cleaning": cleaning[n]})
            for n in names
        ]
    ordered = [*split.train, *split.holdout]
    events = [e.event for e in ordered]
    labels = [
        {spec.label: str(per_head[spec.name][e.event_id].target) for spec in specs} for e in ordered
    ]
    champions = {n: job.champions.get(n) for n in names}
    variant = next(
        (str(m.params.get("variant")) for m in champions.values() if m is not None),
        "fp32",
    )
    say(f"{job.target} text heads: fitting on {len(split.train):,} events ({variant} encoder)")
    fitted = fit_text.fit_all(
        specs,
        events,
        labels,
        only=variant,
        on_progress=say,
    )
    holdout_texts = text.texts_of([e.event for e in split.holdout], specs[0].text)
    shared = _Holdout(split, holdout_texts, per_head, {})
    return [_judge_head(job, name, fitted[name], shared, cleaning[name], say) for name in names]


@dataclass(frozen=True)
class _Holdout:
    """What the heads are judged on, shared: the split, the holdout texts, each
    head's examples by event id and the holdout embeddings per encoder variant."""

    split: Split
    texts: list[str]
    per_head: dict[str, dict[str, Example]]
    embedded: dict[str, Any]


def _judge_head(
    job: TrainJob, name: str, fitted: Any, shared: _Holdout, cleaning: dict[str, int], say: Progress
) -> ModelResult:
    split, texts, per_head, embedded = shared.split, shared.texts, shared.per_head, shared.embedded
    limits, run_id = job.limits, job.run_ids[name]
    y_true = [str(per_head[name][e.event_id].target) for e in split.holdout]
    say(f"{name}: writing the challenger")
    train_classes = [str(per_head[name][e.event_id].target) for e in split.train]
    reference = drift.build_reference([], [], scores=train_classes)
    meta = artifacts.write_version(
        job.models_dir,
        name,
        Amended(
            fitted, dict(fitted.metrics), {"drift": reference.to_json(), "trainer_run": run_id}
        ),
        trained_on=f"labelled {job.target} events: {len(split.train):,} (run {run_id})",
        window=split.train_window,
    )
    challenger = load_served(job.models_dir, meta)
    assert isinstance(challenger, text.ServedText)
    proba = _head_proba(challenger, texts, embedded)
    challenger_metrics = multiclass_metrics(y_true, proba, challenger.head.classes)
    predicted = [challenger.head.classes[i] for i in proba.argmax(axis=1)]
    champion = job.champions.get(name)
    champion_metrics: dict[str, float] | None = None
    champion_predicted: list[str] | None = None
    note = "no champion yet" if champion is None else ""
    if champion is not None:
        try:
            served = load_served(job.models_dir, champion)
            assert isinstance(served, text.ServedText)
            champ_proba = _head_proba(served, texts, embedded)
            champion_metrics = multiclass_metrics(y_true, champ_proba, served.head.classes)
            champion_predicted = [served.head.classes[i] for i in champ_proba.argmax(axis=1)]
        except Exception as exc:
            note = f"champion {champion.tag} could not be loaded: {exc}"
    primary = PRIMARY["multiclass"]
    judged = verdict(champion_metrics, challenger_metrics, metric=primary, margin=limits.margin)
    reason = judged.reason + (f" ({note})" if note else "")
    summary = {**windows(split), "cleaning": cleaning, "metric": primary, "margin": limits.margin}
    return conclude(
        job,
        Judgement(
            name=name,
            run_id=run_id,
            challenger=meta,
            champion=champion,
            promote=judged.promote,
            reason=reason,
            split=split,
            cleaning=cleaning,
            summary=summary,
            champion_metrics=champion_metrics,
            challenger_metrics=challenger_metrics,
            confusions=[
                Confusion(
                    head=name,
                    classes=list(challenger.head.classes),
                    y_true=y_true,
                    champion=champion_predicted,
                    challenger=predicted,
                )
            ],
        ),
        say,
    )


def _head_proba(served: Any, texts: list[str], embedded: dict[str, Any]) -> np.ndarray:
    """The full head's class probabilities (embedding and TF-IDF), in its class order;
    the holdout is encoded once per encoder variant (``embedded`` caches it)."""
    variant = str(served.variant)
    if variant not in embedded:
        embedded[variant] = served.embed(texts)
    return np.asarray(served.head.proba(embedded[variant], served.lexical(texts)))
