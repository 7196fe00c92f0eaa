"""The scorer over the real first models: scores, explanations, shadows and quality.

The first models are trained once per session by the ``trained_models`` fixture (the
same code path as a first start-up) and only read here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from app.inference.base import BatchContext, Prediction
from app.inference.features import recent_key
from app.inference.loading import scorer_from_folder
from app.inference.scoring import Scorer
from app.simulator.generate import training_set
from app.simulator.shapes import EVENT_MODELS
from app.store.ledger import Ledger
from app.values import ModelMeta
from tests.shipped import MODELS, SCORE_TYPES


@pytest.fixture(scope="module")
def scorer(trained_models: Path) -> Scorer:
    return scorer_from_folder(trained_models)


def fresh(scorer: Scorer) -> Scorer:
    """The same models with empty feature state (no customer history yet)."""
    return Scorer(scorer.champions)


def test_first_models_score_well_on_fresh_simulator_data(scorer: Scorer) -> None:
    """Quality on unseen traffic (seed 99), measured 2026-11-30: fraud AUC ≈ 0.9, risk
    AUC ≈ 0.8, ticket category accuracy ≈ 0.99, urgency ≈ 0.9, sentiment ≈ 0.9 — the
    floors sit a few points lower."""
    s = fresh(scorer)
    txs, tx_labels = training_set("transaction", 4000, seed=99)
    fraud = [r["fraud"] for r in s.score("transaction", txs)]
    orders, order_labels = training_set("order", 4000, seed=99)
    risk = [r["risk"] for r in s.score("order", orders)]
    tickets, ticket_labels = training_set("ticket", 1000, seed=99)
    rows = s.score("ticket", tickets)
    quality = {
        "fraud_auc": roc_auc_score([int(bool(lb["fraud"])) for lb in tx_labels], fraud),
        "risk_auc": roc_auc_score([int(bool(lb["problem"])) for lb in order_labels], risk),
        **{
            f"{key}_acc": accuracy_score([lb[key] for lb in ticket_labels], [r[key] for r in rows])
            for key in ("category", "urgency", "sentiment")
        },
    }
    assert quality["fraud_auc"] > 0.8, quality
    assert quality["risk_auc"] > 0.75, quality
    assert quality["category_acc"] > 0.9, quality
    assert quality["urgency_acc"] > 0.7, quality
    assert quality["sentiment_acc"] > 0.7, quality


@pytest.mark.parametrize("event_type", ["transaction", "order", "ticket"])
def test_scorer_gives_each_event_its_types_score_keys(scorer: Scorer, event_type: str) -> None:
    """One score dict per event with exactly SCORE_TYPES keys; numbers lie in [0, 1]."""
    events, _ = training_set(event_type, 25, seed=42)
    rows = fresh(scorer).score(event_type, events)
    kinds = SCORE_TYPES[event_type]
    assert len(rows) == len(events)
    for row in rows:
        assert set(row) == set(kinds)
        for key, kind in kinds.items():
            value = row[key]
            if kind == "number":
                assert isinstance(value, float)
                assert 0.0 <= value <= 1.0
            else:
                assert isinstance(value, str)
                assert value


@pytest.mark.parametrize("event_type", ["transaction", "order", "ticket"])
def test_every_score_comes_with_an_explanation(scorer: Scorer, event_type: str) -> None:
    """Each model of the type explains each event: a method and ranked top contributions."""
    events, _ = training_set(event_type, 20, seed=45)
    batch = fresh(scorer).score_batch(event_type, events)
    names = {n for n in MODELS if n.startswith(f"{event_type}.")}
    for explained in batch.explanations:
        assert set(explained) == names
        for explanation in explained.values():
            assert explanation["method"] in {"linear-exact", "occlusion", "top-classes"}
            top = explanation["top"]
            assert 1 <= len(top) <= 3
            if explanation["method"] != "top-classes":
                sizes = [abs(c) for _, c in top]
                assert sizes == sorted(sizes, reverse=True)


def test_scorer_scores_a_batch_like_single_events(scorer: Scorer) -> None:
    """A batch gives the same scores as the same events one at a time, in order."""
    events, _ = training_set("transaction", 16, seed=44)
    batch = fresh(scorer).score("transaction", events)
    one_by_one = fresh(scorer)
    alone = [one_by_one.score("transaction", [e])[0] for e in events]
    assert batch == alone


def test_scorer_of_an_empty_batch_is_empty(scorer: Scorer) -> None:
    for event_type in SCORE_TYPES:
        assert scorer.score(event_type, []) == []


def test_scorer_versions_name_the_models_of_a_type(scorer: Scorer) -> None:
    assert scorer.versions("transaction") == {"transaction.fraud": "v1"}
    assert scorer.versions("ticket") == {
        "ticket.category": "v1",
        "ticket.sentiment": "v1",
        "ticket.urgency": "v1",
    }
    assert scorer.versions("invoice") == {}


class Failing:
    """A model version that raises when asked to score (a broken challenger)."""

    def __init__(self, meta: ModelMeta) -> None:
        self.meta = meta

    def predict(self, ctx: BatchContext) -> list[Prediction]:
        raise RuntimeError("broken challenger")


def test_a_shadow_scores_beside_the_champion_and_never_changes_the_scores(
    scorer: Scorer,
) -> None:
    """A shadow's output goes under shadow["name@vN"]; the champion's scores are unchanged;
    a shadow that raises is skipped, not fatal."""
    from dataclasses import replace

    champion = scorer.champions["order.risk"]
    shadow_meta = replace(champion.meta, version=2)

    class Echo:
        meta = shadow_meta

        def predict(self, ctx: BatchContext) -> list[Prediction]:
            return [Prediction({"risk": 0.5}, {"method": "x", "top": []}) for _ in ctx.events]

    events, _ = training_set("order", 10, seed=46)
    plain = fresh(scorer).score_batch("order", events)
    with_shadow = Scorer(
        scorer.champions, {"order.risk": [Echo(), Failing(replace(champion.meta, version=3))]}
    ).score_batch("order", events)
    assert with_shadow.scores == plain.scores
    assert with_shadow.shadow == [{"order.risk@v2": {"risk": 0.5}} for _ in events]
    assert with_shadow.versions == {"order.risk": "v1"}


def test_customer_history_carries_over_when_models_are_swapped(scorer: Scorer) -> None:
    """with_models keeps per-type feature state: a swap does not forget customers."""
    events, _ = training_set("transaction", 50, seed=47)
    first = fresh(scorer)
    first.score("transaction", events)
    swapped = first.with_models(first.champions, {})
    state: Any = swapped._state
    assert state is first._state
    assert state.get("transaction")


def test_remembered_history_gives_the_scores_uninterrupted_serving_would(
    scorer: Scorer,
) -> None:
    """Events replayed into a fresh scorer's history (a restart) make the next event score
    exactly as if the scorer had served them itself."""
    events, _ = training_set("transaction", 400, seed=48)
    served = fresh(scorer)
    served.score("transaction", events[:-20])
    restarted = fresh(scorer)
    restarted.remember("transaction", events[:-20])
    assert restarted.score("transaction", events[-20:]) == served.score("transaction", events[-20:])
    forgetful = fresh(scorer).score("transaction", events[-20:])
    assert forgetful != restarted.score("transaction", events[-20:])


async def test_replay_history_feeds_the_ledgers_recent_decided_events(
    scorer: Scorer, ledger: Ledger
) -> None:
    """At start-up the decided events within the lookback (tabular types only) are
    replayed from the ledger into the feature history; 0 hours replays nothing."""
    from datetime import timedelta

    from app.pipeline.models import replay_history
    from app.values import DecisionRecord

    events = [
        e for t in ("transaction", "order", "ticket") for e in training_set(t, 30, seed=49)[0]
    ]
    records = [
        DecisionRecord(
            event_id=e.event_id,
            event_type=e.event_type,
            partition_key=e.partition_key,
            decision="approve",
            actions=[],
            scores={},
            model_versions={},
            rules_fired=[],
            reasons=[],
            payload=e.model_dump(mode="json"),
            latency_ms=1.0,
            occurred_at=e.occurred_at,
            decided_at=e.occurred_at,
            source_topic=f"events.{e.event_type}",
            source_partition=0,
            source_offset=i,
        )
        for i, e in enumerate(events)
    ]
    await ledger.record(records, [])
    restarted = fresh(scorer)
    assert (
        await replay_history(ledger, restarted, lookback=timedelta(0), event_models=EVENT_MODELS)
        == 0
    )
    fed = await replay_history(
        ledger, restarted, lookback=timedelta(days=3650), event_models=EVENT_MODELS
    )
    assert fed == 60  # transactions and orders; tickets keep no history
    txs = [e for e in events if e.event_type == "transaction"]
    history = restarted._state["transaction"]["history"]
    assert history.mean(recent_key("amount", txs[0].account_id)) is not None
