"""What one training run takes and gives back: the value types every job module shares.

``TrainJob`` goes in (labelled decisions already read from the ledger, the champions'
descriptions, the ``Limits``); one ``ModelResult`` per model comes out. ``Judgement`` is
what a family's run (``job_tabular``, ``job_text``) found, handed to ``conclude``;
``Amended`` is a fitted model with the trainer's metrics and extra params, as
``artifacts.write_version`` writes it. Plain data: it crosses into the trainer's child
process, and nothing here imports a job module (``job.run_job`` dispatches to them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from app.declarations.spec import DeclaredModel
from app.trainer.jobs.dataset import Split
from app.trainer.report.report import Confusion, Curves
from app.values import ModelMeta

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Limits:
    """How a run may train and judge (from Settings; plain data for the child process)."""

    budget_s: float = 60.0  # the hyper-parameter search's time budget, per model
    margin: float = 0.005  # how much better (primary metric) a challenger must be
    review_rate: float = 0.05  # the business metric's review share
    holdout_share: float = 0.25
    min_train: int = 200
    min_holdout: int = 100
    max_rows: int | None = 200_000
    text_max_rows: int = 4_000
    half_life_days: float | None = 30.0
    folds: int = 3
    estimators: tuple[str, ...] = ("logreg", "hgb", "forest")
    max_features: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class Record:
    """One labelled decision as the trainer needs it (``LabelledDecision``'s fields)."""

    event_id: str
    event_type: str
    occurred_at: datetime
    payload: dict[str, Any]
    labels: dict[str, Any]


@dataclass(frozen=True)
class TrainJob:
    target: str  # a tabular model name, or an event type: its text models together
    trigger: str
    run_ids: dict[str, int]  # model name -> its training_runs row
    records: tuple[Record, ...]
    champions: dict[str, ModelMeta | None]  # model name -> the champion's description
    models_dir: Path
    reports_dir: Path
    declared: dict[str, DeclaredModel]  # model name -> its declaration
    limits: Limits = field(default_factory=Limits)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.run_ids)

    @property
    def text_group(self) -> bool:
        """Whether this job trains an event type's text models (one encoder pass)."""
        return is_text_group(self.target)


@dataclass(frozen=True)
class ModelResult:
    model: str
    run_id: int
    status: str  # "trained" (see ``promote``) or "skipped" (not enough data)
    reason: str
    promote: bool = False
    challenger: ModelMeta | None = None  # written, not registered
    champion_version: int | None = None
    champion_metrics: dict[str, float] = field(default_factory=dict)
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    report: str = ""


def is_text_group(target: str) -> bool:
    """A target without a dot is an event type: its text models train together."""
    return "." not in target


def models_of(target: str, catalog: Mapping[str, DeclaredModel]) -> tuple[str, ...]:
    """The model names one job trains: a tabular model alone, or every text model of an
    event type together (they share one encoder pass)."""
    found = catalog.get(target)
    if found is not None and found.family == "tabular":
        return (target,)
    if found is not None:
        raise ValueError(
            f"{target} trains with the other text models of {found.event_type}: train "
            f"{found.event_type!r}"
        )
    heads = tuple(n for n, m in catalog.items() if m.event_type == target and m.family == "text")
    if heads:
        return heads
    raise ValueError(f"unknown model {target!r}: use one of {', '.join(_targets(catalog))}")


def target_of(model: str, catalog: Mapping[str, DeclaredModel]) -> str:
    """The job that trains ``model``."""
    found = catalog.get(model)
    if found is None:
        raise ValueError(f"unknown model {model!r}: use one of {', '.join(_targets(catalog))}")
    return found.event_type if found.family == "text" else model


def _targets(catalog: Mapping[str, DeclaredModel]) -> list[str]:
    return list(dict.fromkeys(target_of(n, catalog) for n in catalog)) if catalog else ["(none)"]


@dataclass(frozen=True)
class Amended:
    """A fitted model (``base.Fitted``) with the trainer's metrics and extra params (the
    drift reference, the run) in place of its own."""

    inner: Any
    metrics: dict[str, float]
    extra: dict[str, Any]

    @property
    def family(self) -> str:
        return str(self.inner.family)

    @property
    def kind(self) -> str:
        return str(self.inner.kind)

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.inner.features)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.inner.classes)

    @property
    def params(self) -> dict[str, Any]:
        return {**self.inner.params, **self.extra}

    def write(self, folder: Path) -> list[str]:
        return list(self.inner.write(folder))


@dataclass(frozen=True)
class Judgement:
    """What a family's run found, for the common end of every run (``conclude``)."""

    name: str
    run_id: int
    challenger: ModelMeta  # written, not registered
    champion: ModelMeta | None
    promote: bool
    reason: str
    split: Split
    cleaning: dict[str, int]
    summary: dict[str, Any]
    champion_metrics: dict[str, float] | None
    challenger_metrics: dict[str, float]
    candidates: list[dict[str, Any]] = field(default_factory=list)
    curves: Curves | None = None
    importances: list[tuple[str, float]] = field(default_factory=list)
    confusions: list[Confusion] = field(default_factory=list)
