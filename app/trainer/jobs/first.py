"""First models: version 1 of a model whose event type the simulator knows (the shipped
types), trained on simulator data with planted patterns, for a deployment (or a test, a
benchmark, the demo) that has none yet. A type Arbiter does not ship has no simulator:
its models wait for their own outcomes (the trainer trains them).

``train_first`` writes the versions into the models folder and registers nothing: at
start-up ``app.trainer.bootstrap.ensure_champions`` registers them as champions; the
benchmarks and the test suite load them from the folder (``loading.scorer_from_folder``).
Each first version carries the drift reference of its training data, as a trainer run's
challenger does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from app.declarations.spec import DeclaredModel
from app.inference import artifacts
from app.inference.text import TextSpec
from app.simulator.generate import FIRST_MODEL_EVENTS, training_set
from app.trainer.jobs import fit_tabular, fit_text
from app.trainer.jobs.dataset import target
from app.trainer.jobs.job_tabular import first_references
from app.trainer.jobs.run import Amended, Progress
from app.values import ModelMeta


def can_train_first(model: DeclaredModel) -> bool:
    """Whether the simulator can train a first version of ``model``."""
    return model.event_type in FIRST_MODEL_EVENTS


def train_first(
    models_dir: Path, models: Sequence[DeclaredModel], *, on_progress: Progress
) -> dict[str, ModelMeta]:
    """Train version 1 of ``models`` on simulator data and write them (not registered)."""
    unknown = [m.name for m in models if not can_train_first(m)]
    if unknown:
        raise ValueError(
            f"the simulator makes no {', '.join(unknown)} data: only models of "
            f"{', '.join(FIRST_MODEL_EVENTS)} get a first version"
        )
    written: dict[str, ModelMeta] = {}
    for model in models:
        if model.family != "tabular":
            continue
        n = FIRST_MODEL_EVENTS[model.event_type]
        on_progress(f"training {model.name} on simulator data ({n:,} events)")
        events, labels = training_set(model.event_type, n, seed=1)
        truth = [target(model, lb) is True for lb in labels]
        fitted = fit_tabular.fit(model, events, truth)
        extra = first_references(fitted, events, truth)
        written[model.name] = artifacts.write_version(
            models_dir,
            model.name,
            Amended(fitted, fitted.metrics, extra),
            trained_on=f"simulator seed=1 n={n}",
            window=fitted.window,
        )
    by_type: dict[str, list[DeclaredModel]] = {}
    for model in models:
        if model.family == "text":
            by_type.setdefault(model.event_type, []).append(model)
    for event_type, heads in by_type.items():
        written |= _first_text(models_dir, event_type, heads, on_progress)
    return written


def _first_text(
    models_dir: Path, event_type: str, heads: Sequence[DeclaredModel], on_progress: Progress
) -> dict[str, ModelMeta]:
    n = FIRST_MODEL_EVENTS[event_type]
    on_progress(
        f"training the {event_type} text heads on simulator data ({n:,}); "
        "comparing encoder variants"
    )
    events, labels = training_set(event_type, n, seed=1)
    specs = [TextSpec.of(m) for m in heads]
    fitted = fit_text.fit_all(specs, events, labels, on_progress=on_progress)
    written: dict[str, ModelMeta] = {}
    for spec in specs:
        head = fitted[spec.name]
        extra = first_references(head, events, [lb[spec.label] for lb in labels])
        written[spec.name] = artifacts.write_version(
            models_dir,
            spec.name,
            Amended(head, head.metrics, extra),
            trained_on=f"simulator seed=1 n={n}",
            window=head.window,
        )
    return written


def train_missing(
    models_dir: Path,
    catalog: Mapping[str, DeclaredModel],
    *,
    on_progress: Progress | None = None,
) -> list[str]:
    """Train version 1 of every model of ``catalog`` the simulator can train that has no
    version in ``models_dir`` (the benchmarks' models folder); returns the names trained."""
    have = {m.name for m in artifacts.scan(models_dir)}
    missing = [m for n, m in catalog.items() if n not in have and can_train_first(m)]
    if missing:
        train_first(models_dir, missing, on_progress=on_progress or (lambda _msg: None))
    return [m.name for m in missing]
