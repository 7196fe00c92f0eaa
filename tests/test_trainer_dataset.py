"""Tests of the trainer's dataset: targets from outcome labels, cleaning labelled
decisions into examples, the split by time, and sample weights.

Records are ``LabelledDecision``s (what the outcome store returns) built from simulator
events, their payloads logged as the pipeline logs them (``model_dump(mode="json")``).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from app.simulator.generate import training_set
from app.store.outcomes import LabelledDecision
from app.trainer.jobs import fit_tabular
from app.trainer.jobs.dataset import (
    Cleaning,
    Example,
    NotEnoughData,
    build_examples,
    sample_weights,
    target,
    time_split,
)
from app.trainer.jobs.run import models_of, target_of
from schemas import EventBase
from tests.shipped import CATALOG

START = datetime(2026, 3, 1, tzinfo=UTC)


def record(event: EventBase, labels: dict[str, Any], **changes: Any) -> LabelledDecision:
    fields: dict[str, Any] = {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "occurred_at": event.occurred_at,
        "payload": event.model_dump(mode="json"),
        "scores": {},
        "model_versions": {},
        "labels": labels,
        "observed_at": event.occurred_at + timedelta(days=30),
    }
    fields.update(changes)
    return LabelledDecision(**fields)


def examples_at(targets: list[bool | str], *, hours_apart: float = 1.0) -> list[Example]:
    """One example per target, an hour apart, in order (the event itself is a stand-in)."""
    events, _ = training_set("transaction", 1, seed=5)
    return [
        Example(f"e{i:05d}", START + timedelta(hours=i * hours_apart), events[0], t)
        for i, t in enumerate(targets)
    ]


# --- target ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"fraud": True}, True),
        ({"fraud": False}, False),
        ({"fraud": 1}, True),
        ({"fraud": 0.0}, False),
        ({"fraud": "TRUE"}, True),
        ({"fraud": " false "}, False),
        ({"fraud": "maybe"}, None),
        ({"fraud": 2}, None),
        ({"fraud": None}, None),
        ({"status": "chargeback"}, None),
        ({}, None),
    ],
)
def test_fraud_target_accepts_bools_zero_one_and_true_false_text(
    labels: dict[str, Any], expected: bool | None
) -> None:
    """transaction.fraud reads labels["fraud"] as a yes/no; anything else is unusable."""
    assert target(CATALOG["transaction.fraud"], labels) is expected


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"status": "chargeback"}, True),
        ({"status": "Returned"}, True),
        ({"status": "cancelled", "problem": False}, True),
        ({"status": "fulfilled"}, False),
        ({"status": "fulfilled", "problem": True}, False),
        ({"status": "lost_in_space"}, None),
        ({"status": "lost_in_space", "problem": True}, None),
        ({"status": 3}, None),
        ({"problem": True}, True),
        ({"problem": "false"}, False),
        ({"problem": "perhaps"}, None),
        ({"fraud": True}, None),
    ],
)
def test_order_target_is_a_bad_status_or_else_the_problem_flag(
    labels: dict[str, Any], expected: bool | None
) -> None:
    """order.risk: a known status decides (cancelled/returned/chargeback = positive, as
    schemas/order.yaml declares); an unknown one is unusable; without a status, its
    fallback label "problem"."""
    assert CATALOG["order.risk"].spec.positive == ("chargeback", "returned", "cancelled")
    assert target(CATALOG["order.risk"], labels) is expected


def test_ticket_targets_are_a_declared_class_spelt_as_declared() -> None:
    """ticket.<head> reads its label: a declared value in any case and spacing counts,
    spelt as declared; an undeclared value, a blank or a non-string is unusable."""
    labels = {"category": "billing", "urgency": " HIGH ", "sentiment": ""}
    assert target(CATALOG["ticket.category"], labels) == "billing"
    assert target(CATALOG["ticket.urgency"], labels) == "high"
    assert target(CATALOG["ticket.sentiment"], labels) is None
    assert target(CATALOG["ticket.sentiment"], {"sentiment": True}) is None
    assert target(CATALOG["ticket.category"], {"category": "gardening"}) is None
    assert target(CATALOG["ticket.category"], {}) is None


def test_a_job_trains_a_tabular_model_alone_or_a_types_text_models_together() -> None:
    """A tabular model is its own job; text models train with their type's others (the
    type names the job); an unknown name is refused listing what can be trained."""
    assert models_of("order.risk", CATALOG) == ("order.risk",)
    assert models_of("ticket", CATALOG) == ("ticket.category", "ticket.urgency", "ticket.sentiment")
    assert target_of("ticket.urgency", CATALOG) == "ticket"
    assert target_of("transaction.fraud", CATALOG) == "transaction.fraud"
    with pytest.raises(ValueError, match=r"train 'ticket'"):
        models_of("ticket.urgency", CATALOG)
    with pytest.raises(ValueError, match=r"order\.risk, ticket"):
        models_of("order.returns", CATALOG)
    with pytest.raises(ValueError, match=r"transaction\.fraud"):
        target_of("transaction.churn", CATALOG)


# --- build_examples -------------------------------------------------------------------


def test_build_examples_dedupes_validates_drops_sorts_and_counts() -> None:
    """The last record of an event wins, bad payloads and unusable labels are dropped,
    examples come out oldest first, and Cleaning counts each record once."""
    events, _ = training_set("transaction", 6, seed=5)
    a, b, c, d, e, f = events
    records = [
        record(c, {"fraud": True}),
        record(a, {"fraud": False}),  # superseded by the later record of a
        record(b, {"fraud": "false"}),
        record(a, {"fraud": True}),
        record(d, {"fraud": "unknown"}),  # unusable label
        record(e, {"fraud": True}, payload={**e.model_dump(mode="json"), "amount": "lots"}),
        record(f, {"fraud": True}, event_type="order"),  # not a transaction
    ]
    examples, cleaning = build_examples(CATALOG["transaction.fraud"], records)
    assert [x.event_id for x in examples] == [a.event_id, b.event_id, c.event_id]
    assert [x.target for x in examples] == [True, False, True]
    assert examples[0].event.model_dump() == a.model_dump()  # decoded by the declaration
    assert cleaning == Cleaning(
        received=7, duplicates=1, invalid_payload=2, unlabelled=1, kept=3, capped=0
    )
    counts = cleaning.as_dict()
    assert counts["received"] == sum(v for k, v in counts.items() if k != "received")


def test_build_examples_sorts_by_time_then_id_and_keeps_the_most_recent() -> None:
    """Records in any order come out by occurred_at (ties by event_id); max_rows keeps the
    newest and counts the rest as capped."""
    events, labels = training_set("order", 8, seed=6)
    records = [
        record(ev, dict(lb), occurred_at=START + timedelta(minutes=(7 - i) // 2))
        for i, (ev, lb) in enumerate(zip(events, labels, strict=True))
    ]
    examples, cleaning = build_examples(CATALOG["order.risk"], records, max_rows=5)
    keys = [(x.occurred_at, x.event_id) for x in examples]
    assert keys == sorted(keys)
    everything, _ = build_examples(CATALOG["order.risk"], records)
    assert [(x.event_id, x.target) for x in examples] == [
        (x.event_id, x.target) for x in everything[-5:]
    ]
    assert (cleaning.kept, cleaning.capped) == (5, 3)
    with pytest.raises(ValueError, match="max_rows"):
        build_examples(CATALOG["order.risk"], records, max_rows=0)


def test_ticket_examples_carry_string_targets() -> None:
    """Ticket heads get their label strings as targets from the same records."""
    events, labels = training_set("ticket", 5, seed=7)
    records = [record(ev, dict(lb)) for ev, lb in zip(events, labels, strict=True)]
    examples, cleaning = build_examples(CATALOG["ticket.urgency"], records)
    assert [x.target for x in examples] == [lb["urgency"] for lb in labels]
    assert cleaning.kept == 5


# --- time_split -----------------------------------------------------------------------


def test_time_split_trains_on_the_past_and_holds_out_the_future() -> None:
    """The oldest 75 % train, the newest 25 % are held out, whatever the input order."""
    targets: list[bool | str] = [i % 5 == 0 for i in range(400)]
    examples = examples_at(targets)
    split = time_split(list(reversed(examples)))
    assert (len(split.train), len(split.holdout)) == (300, 100)
    assert max(x.occurred_at for x in split.train) < min(x.occurred_at for x in split.holdout)
    assert split.train_window == (
        examples[0].occurred_at.isoformat(),
        examples[299].occurred_at.isoformat(),
    )
    assert split.holdout_window == (
        examples[300].occurred_at.isoformat(),
        examples[-1].occurred_at.isoformat(),
    )


def test_time_split_refuses_too_few_examples_saying_how_many_are_needed() -> None:
    """Below min_train/min_holdout: NotEnoughData with the count, the need and the fix."""
    examples = examples_at([i % 5 == 0 for i in range(396)])
    with pytest.raises(NotEnoughData, match=r"396 usable examples, need at least 397") as info:
        time_split(examples)
    assert "ARBITER_TRAINER_MIN_NEW" in str(info.value)
    assert "wait for more outcomes" in str(info.value)
    split = time_split(examples_at([i % 5 == 0 for i in range(397)]))
    assert (len(split.train), len(split.holdout)) == (297, 100)


def test_time_split_needs_both_outcomes_in_train_and_holdout() -> None:
    """A yes/no target with one outcome in either part is refused; strings need two
    classes to train on; need_both_classes=False lets both through."""
    no_late_positive = examples_at([i < 300 and i % 5 == 0 for i in range(400)])
    with pytest.raises(NotEnoughData, match="holdout part"):
        time_split(no_late_positive)
    no_early_positive = examples_at([i >= 300 for i in range(400)])
    with pytest.raises(NotEnoughData, match="training part"):
        time_split(no_early_positive)
    one_class = examples_at(["billing"] * 300 + ["refund"] * 100)
    with pytest.raises(NotEnoughData, match="at least two"):
        time_split(one_class)
    assert len(time_split(one_class, need_both_classes=False).holdout) == 100


# --- sample_weights -------------------------------------------------------------------


def test_sample_weights_lift_positives_by_the_square_root_of_the_imbalance() -> None:
    """10 positives in 100: positives weigh sqrt(90/10) = 3 times a negative, mean 1, and
    the shape equals tabular's own weights."""
    y = np.asarray([1] * 10 + [0] * 90)
    times = [START] * 100
    weights = sample_weights(y, times, half_life_days=None)
    assert weights[0] / weights[-1] == pytest.approx(3.0)
    assert weights.mean() == pytest.approx(1.0)
    own = fit_tabular.imbalance_weights(y)
    np.testing.assert_allclose(weights, own / own.mean())


def test_sample_weights_halve_every_half_life_back_from_the_newest() -> None:
    """With a half-life of 10 days, an example 10 days older weighs half, 20 days a
    quarter; string targets get no class weight, only recency."""
    times = [START, START + timedelta(days=10), START + timedelta(days=20)]
    y = np.asarray(["a", "b", "b"])
    weights = sample_weights(y, times, half_life_days=10)
    assert weights.mean() == pytest.approx(1.0)
    assert weights[1] / weights[2] == pytest.approx(0.5)
    assert weights[0] / weights[2] == pytest.approx(0.25)
    flat = sample_weights(y, times, half_life_days=None)
    np.testing.assert_allclose(flat, np.ones(3))


def test_sample_weights_combine_class_and_recency_and_refuse_bad_input() -> None:
    """Both factors multiply; one class gives no class weight; mismatched lengths and a
    non-positive half-life are refused."""
    times = [START + timedelta(days=d) for d in (0, 0, 5, 5)]
    y = np.asarray([True, False, False, False])
    weights = sample_weights(y, times, half_life_days=5)
    raw = np.asarray([math.sqrt(3) * 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(weights, raw / raw.mean())
    np.testing.assert_allclose(
        sample_weights(np.zeros(4, dtype=int), times, half_life_days=None), np.ones(4)
    )
    with pytest.raises(ValueError, match="targets"):
        sample_weights(y, times[:3], half_life_days=None)
    with pytest.raises(ValueError, match="half_life_days"):
        sample_weights(y, times, half_life_days=0)
