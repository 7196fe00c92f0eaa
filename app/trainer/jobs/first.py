"""First models: version 1 of every model, trained on simulator data with planted
patterns, for a deployment (or a test, a benchmark, the demo) that has none yet.

``train_first`` writes the versions into the models folder and registers nothing: at
start-up ``app.trainer.bootstrap.ensure_champions`` registers them as champions; the
benchmarks and the test suite load them from the folder (``loading.scorer_from_folder``).
Each first version carries the drift reference of its training data, as a trainer run's
challenger does.
"""

from __future__ import annotations

from pathlib import Path

from app.inference import artifacts, tabular, text
from app.inference.catalog import MODELS
from app.simulator.generate import training_set
from app.trainer.jobs import fit_tabular, fit_text
from app.trainer.jobs.job_tabular import first_references
from app.trainer.jobs.run import Amended, Progress
from app.values import ModelMeta


def train_first(
    models_dir: Path, names: list[str], *, on_progress: Progress
) -> dict[str, ModelMeta]:
    """Train version 1 of ``names`` on simulator data and write them (not registered)."""
    written: dict[str, ModelMeta] = {}
    for spec in tabular.SPECS:
        if spec.name not in names:
            continue
        on_progress(f"training {spec.name} on simulator data ({spec.train_size:,} events)")
        events, labels = training_set(spec.event_type, spec.train_size, seed=1)
        truth = [bool(lb[spec.label]) for lb in labels]
        fitted = fit_tabular.fit(spec, events, truth)
        extra = first_references(fitted, events, truth)
        written[spec.name] = artifacts.write_version(
            models_dir,
            spec.name,
            Amended(fitted, fitted.metrics, extra),
            trained_on=f"simulator seed=1 n={spec.train_size}",
            window=fitted.window,
        )
    wanted_text = [s for s in text.SPECS if s.name in names]
    if wanted_text:
        on_progress(
            f"training the ticket text heads on simulator tickets ({fit_text.TRAIN_SIZE:,}); "
            "comparing encoder variants"
        )
        events, labels = training_set("ticket", fit_text.TRAIN_SIZE, seed=1)
        fitted_text = fit_text.fit_all(events, labels, on_progress=on_progress)  # type: ignore[arg-type]
        for text_spec in wanted_text:
            head = fitted_text[text_spec.name]
            extra = first_references(head, events, [lb[text_spec.label] for lb in labels])
            written[text_spec.name] = artifacts.write_version(
                models_dir,
                text_spec.name,
                Amended(head, head.metrics, extra),
                trained_on=f"simulator seed=1 n={fit_text.TRAIN_SIZE}",
                window=head.window,
            )
    return written


def train_missing(models_dir: Path, *, on_progress: Progress | None = None) -> list[str]:
    """Train version 1 of every model that has no version in ``models_dir`` (the
    benchmarks' models folder); returns the names trained."""
    have = {m.name for m in artifacts.scan(models_dir)}
    missing = [name for name in MODELS if name not in have]
    if missing:
        train_first(models_dir, missing, on_progress=on_progress or (lambda _msg: None))
    return missing
