"""Training examples from labelled decisions: targets, cleaning, a split by time, weights.

Where it sits: the store joins each decision with its latest outcome
(``OutcomeStore.labelled``); here those records become ``Example``s for one model
(``build_examples``), are split into an older training part and a newer holdout
(``time_split``: the challenger is judged on the future it did not see) and weighted
(``sample_weights``: rare class up, old examples down). Pure: no database, no broker.

What a model learns from an outcome (``target``) is what its declaration says
(``predicts:`` in ``schemas/<type>.yaml``): a yes/no model whether the label is one of
its positive values (a boolean label: whether it is true), a multi-class model the class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from app.declarations.build import Limits, build_model
from app.declarations.spec import DeclaredModel
from app.errors import ArbiterError
from schemas import EventCore

Target = bool | str

# Payloads in the ledger passed the service's own caps when they were decided or
# imported; re-validating them for training must not refuse them under smaller ones.
STORED = Limits(max_attributes=1_000_000, max_attribute_chars=1_000_000_000)


def _flag(value: Any) -> bool | None:
    """A yes/no label: a bool, 0/1, or "true"/"false" in any case; anything else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value) if value in (0, 1) else None
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return None


def target(model: DeclaredModel, labels: Mapping[str, Any]) -> bool | str | None:
    """What ``model`` learns from an outcome's ``labels``; None when they do not say.

    A yes/no model: whether the label is one of ``predicts.positive`` (a boolean label:
    whether it is true; without the label, its ``fallback`` boolean label says it); a
    multi-class model: the class, spelt as declared. A value the label does not have is
    unusable (None) rather than guessed.
    """
    spec, label = model.spec, model.label
    value = labels.get(spec.label)
    if value is None:
        return _flag(labels.get(spec.fallback)) if spec.fallback else None
    if label.type == "boolean":
        return _flag(value)
    if not isinstance(value, str):
        return None
    spelt = {v.lower(): v for v in label.values}.get(value.strip().lower())
    if spelt is None:
        return None
    if spec.multi_class:
        return spelt if spelt in spec.classes else None
    return spelt in spec.positive


class LabelledLike(Protocol):
    """A decision with its outcome's labels (``app.store.outcomes.LabelledDecision``).

    Read-only members, so frozen dataclasses satisfy it.
    """

    @property
    def event_id(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def payload(self) -> dict[str, Any]: ...
    @property
    def labels(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Example:
    """One training example: the validated event and what the model should say about it."""

    event_id: str
    occurred_at: datetime
    event: EventCore
    target: bool | str


@dataclass(frozen=True)
class Cleaning:
    """What ``build_examples`` did with the records, each counted once:
    ``received == duplicates + invalid_payload + unlabelled + capped + kept``."""

    received: int
    duplicates: int  # an earlier record of an event_id seen again later (the later one kept)
    invalid_payload: int  # the payload does not validate (or is of another event type)
    unlabelled: int  # the labels say nothing usable for this model
    kept: int
    capped: int = 0  # usable but older than the most recent ``max_rows``

    def as_dict(self) -> dict[str, int]:
        return {
            "received": self.received,
            "duplicates": self.duplicates,
            "invalid_payload": self.invalid_payload,
            "unlabelled": self.unlabelled,
            "capped": self.capped,
            "kept": self.kept,
        }


def build_examples(
    model: DeclaredModel,
    records: Sequence[LabelledLike],
    *,
    max_rows: int | None = None,
    event_model: type[EventCore] | None = None,
) -> tuple[list[Example], Cleaning]:
    """``model_name``'s examples from labelled decisions, oldest first, and the counts.

    Per ``event_id`` the last record is kept; its payload is validated with the event
    type's model (compiled from ``model.declaration`` unless ``event_model`` is given; the
    decision logged it as ``model_dump(mode="json")``); records whose
    labels give no target are dropped; at most the ``max_rows`` most recent usable ones
    are kept, and records older than those are not examined (counted as ``capped``).
    """
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be >= 1 or None, got {max_rows}")
    event_type = model.event_type
    decoder = event_model or build_model(model.declaration, STORED)
    latest: dict[str, LabelledLike] = {}
    for record in records:
        latest.pop(record.event_id, None)  # re-inserted: dict order = last appearance
        latest[record.event_id] = record
    invalid = unlabelled = capped = 0
    examples: list[Example] = []
    # Newest first, stopping at the cap: at 1M records with a 200k cap, validating every
    # payload only to keep the newest fifth cost ~20 s (bench/RESULTS.md, training).
    newest_first = sorted(latest.values(), key=lambda r: (r.occurred_at, r.event_id), reverse=True)
    for i, record in enumerate(newest_first):
        if max_rows is not None and len(examples) >= max_rows:
            capped = len(newest_first) - i  # older than the newest usable max_rows: unread
            break
        if record.event_type != event_type:
            invalid += 1
            continue
        try:
            event = decoder.model_validate(record.payload)
        except ValidationError:
            invalid += 1
            continue
        wanted = target(model, record.labels)
        if wanted is None:
            unlabelled += 1
            continue
        examples.append(Example(record.event_id, record.occurred_at, event, wanted))
    examples.reverse()
    cleaning = Cleaning(
        received=len(records),
        duplicates=len(records) - len(latest),
        invalid_payload=invalid,
        unlabelled=unlabelled,
        kept=len(examples),
        capped=capped,
    )
    return examples, cleaning


def _window(examples: Sequence[Example]) -> tuple[str, str]:
    if not examples:
        return ("", "")
    return (examples[0].occurred_at.isoformat(), examples[-1].occurred_at.isoformat())


@dataclass(frozen=True)
class Split:
    """Examples split by time: ``train`` older than ``holdout``, each oldest first."""

    train: list[Example]
    holdout: list[Example]

    @property
    def train_window(self) -> tuple[str, str]:
        """ISO ``occurred_at`` of the first and last training example (``""`` if none)."""
        return _window(self.train)

    @property
    def holdout_window(self) -> tuple[str, str]:
        """ISO ``occurred_at`` of the first and last holdout example (``""`` if none)."""
        return _window(self.holdout)


class NotEnoughData(ArbiterError):
    """Too few usable examples to train or judge a model: try again after more outcomes."""


_ADVICE = "wait for more outcomes to arrive, or lower ARBITER_TRAINER_MIN_NEW to retrain on less"


def _needed(holdout_share: float, min_train: int, min_holdout: int) -> int:
    """The fewest examples whose split gives ``min_train`` and ``min_holdout``."""
    n = max(
        min_train + min_holdout,
        math.floor(min_train / (1 - holdout_share)),
        math.floor((min_holdout - 1) / holdout_share),
    )
    while (
        int(n * (1 - holdout_share)) < min_train or n - int(n * (1 - holdout_share)) < min_holdout
    ):
        n += 1
    return n


def time_split(
    examples: Sequence[Example],
    *,
    holdout_share: float = 0.25,
    min_train: int = 200,
    min_holdout: int = 100,
    need_both_classes: bool = True,
) -> Split:
    """The oldest ``1 - holdout_share`` to train on, the newest ``holdout_share`` to judge.

    Evaluating on later data than the model learnt from is what serving will face.
    With ``need_both_classes``, yes/no targets must have both answers in each part and
    string targets at least two classes in the training part.
    """
    if not 0 < holdout_share < 1:
        raise ValueError(f"holdout_share must be between 0 and 1, got {holdout_share}")
    ordered = sorted(examples, key=lambda e: (e.occurred_at, e.event_id))
    cut = int(len(ordered) * (1 - holdout_share))
    train, holdout = ordered[:cut], ordered[cut:]
    if len(train) < min_train or len(holdout) < min_holdout:
        need = _needed(holdout_share, min_train, min_holdout)
        raise NotEnoughData(
            f"{len(ordered)} usable examples, need at least {need} ({min_train} to train on "
            f"and {min_holdout} held out, holdout share {holdout_share:g}): {_ADVICE}"
        )
    if need_both_classes and ordered:
        if isinstance(ordered[0].target, bool):
            for part, name in ((train, "training"), (holdout, "holdout")):
                positives = sum(1 for e in part if e.target is True)
                if positives in (0, len(part)):
                    raise NotEnoughData(
                        f"the {name} part ({len(part)} examples) holds {positives} positive: "
                        f"both outcomes are needed in each part; {_ADVICE}"
                    )
        else:
            classes = {e.target for e in train}
            if len(classes) < 2:
                raise NotEnoughData(
                    f"the training part ({len(train)} examples) holds {len(classes)} class: "
                    f"at least two are needed; {_ADVICE}"
                )
    return Split(train, holdout)


def sample_weights(
    y: npt.NDArray[Any], occurred: Sequence[datetime], *, half_life_days: float | None
) -> npt.NDArray[np.float64]:
    """Per example: class imbalance times recency, normalised to mean 1.

    Yes/no targets (bool or 0/1): positives weigh ``sqrt(negatives / positives)``, as
    ``fit_tabular.imbalance_weights`` (one class: all 1). Other targets get no class weight.
    Recency: ``0.5 ** (age_days / half_life_days)`` with the age counted back from the
    newest example, so an example one half-life older counts half; None = no recency.
    """
    y = np.asarray(y)
    if len(y) != len(occurred):
        raise ValueError(f"{len(y)} targets but {len(occurred)} times")
    if half_life_days is not None and not half_life_days > 0:
        raise ValueError(f"half_life_days must be > 0 or None, got {half_life_days}")
    if len(y) == 0:
        return np.ones(0)
    weights = np.ones(len(y))
    binary = y.dtype == bool or (y.dtype.kind in "iuf" and set(np.unique(y)) <= {0, 1})
    if binary:
        positive = y.astype(bool)
        positives = int(positive.sum())
        if 0 < positives < len(y):
            weights[positive] = math.sqrt((len(y) - positives) / positives)
    if half_life_days is not None:
        newest = max(occurred)
        age_days = np.asarray([(newest - t).total_seconds() / 86_400 for t in occurred])
        weights *= 0.5 ** (age_days / half_life_days)
    normalised: npt.NDArray[np.float64] = weights / weights.mean()
    return normalised
