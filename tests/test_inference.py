"""Tests of the inference capability: feature rows, the first models, the scorer and the
artifact store (checksums, trusted types, version pointers).

Real scikit-learn models and real skops files throughout; the first models are trained
once per session by the ``trained_models`` fixture and only read here.
"""

from __future__ import annotations

import json
import math
import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.preprocessing import FunctionTransformer

from app.errors import ConfigError
from app.inference import features
from app.inference.artifacts import (
    TRUSTED_TYPES,
    ModelMeta,
    champion_version,
    load_model,
    next_version,
    save_model,
)
from app.inference.catalog import SCORE_TYPES
from app.inference.models import SPECS, LoadedModel, Scorer, load_or_train
from app.simulator.generate import training_set
from schemas import Order, OrderItem, Ticket, Transaction
from schemas.transaction import Device

MODEL_NAMES = ("transaction.fraud", "order.risk", "ticket.category", "ticket.urgency")
NOON_UTC = datetime(2026, 2, 10, 12, 0, tzinfo=UTC)


def transaction(**changes: Any) -> Transaction:
    fields: dict[str, Any] = {
        "event_id": "txn-1",
        "occurred_at": NOON_UTC,
        "account_id": "acct-1",
        "amount": 120.0,
        "currency": "EUR",
        "merchant": "Shop",
        "merchant_category": "electronics",
        "channel": "online",
        "country": "DE",
        "card_country": "DE",
        "device": Device(device_id="d-1", kind="desktop", is_new=False),
    }
    fields.update(changes)
    return Transaction(**fields)


def order(**changes: Any) -> Order:
    fields: dict[str, Any] = {
        "event_id": "ord-1",
        "occurred_at": NOON_UTC,
        "customer_id": "cust-1",
        "items": [
            OrderItem(sku="A", quantity=2, unit_price=10.0),
            OrderItem(sku="B", quantity=5, unit_price=99.0),
        ],
        "total": 515.0,
        "currency": "USD",
        "payment_method": "gift_card",
        "billing_country": "US",
        "shipping_country": "US",
        "first_order": False,
    }
    fields.update(changes)
    return Order(**fields)


def column(row: list[float], names: tuple[str, ...], name: str) -> float:
    return row[names.index(name)]


def tx_col(tx: Transaction, name: str) -> float:
    return column(features.transaction_row(tx), features.TRANSACTION_FEATURES, name)


def order_col(o: Order, name: str) -> float:
    return column(features.order_row(o), features.ORDER_FEATURES, name)


# --- feature rows -----------------------------------------------------------------------


def test_transaction_row_has_one_value_per_feature_name() -> None:
    """A transaction row is as long as TRANSACTION_FEATURES, whose names are unique."""
    row = features.transaction_row(transaction())
    assert len(row) == len(features.TRANSACTION_FEATURES)
    assert len(set(features.TRANSACTION_FEATURES)) == len(features.TRANSACTION_FEATURES)
    assert all(isinstance(v, float) for v in row)
    assert column(row, features.TRANSACTION_FEATURES, "log_amount") == pytest.approx(
        math.log1p(120.0)
    )


def test_transaction_is_foreign_when_country_differs_from_card_country() -> None:
    """is_foreign is 1 only when the transaction country is not the card's country."""
    assert tx_col(transaction(), "is_foreign") == 0.0
    assert tx_col(transaction(country="TH"), "is_foreign") == 1.0


def test_transaction_device_is_new_flag() -> None:
    """device_is_new follows the device's is_new flag."""
    new = Device(device_id="d-2", kind="mobile", is_new=True)
    assert tx_col(transaction(), "device_is_new") == 0.0
    assert tx_col(transaction(device=new), "device_is_new") == 1.0


@pytest.mark.parametrize(
    ("occurred_at", "night"),
    [
        (datetime(2026, 2, 10, 0, 0, tzinfo=UTC), 1.0),
        (datetime(2026, 2, 10, 5, 59, tzinfo=UTC), 1.0),
        (datetime(2026, 2, 10, 6, 0, tzinfo=UTC), 0.0),
        (datetime(2026, 2, 10, 23, 59, tzinfo=UTC), 0.0),
        # 07:30 at UTC+2 is 05:30 UTC: night is judged in UTC, not local time.
        (datetime(2026, 2, 10, 7, 30, tzinfo=timezone(timedelta(hours=2))), 1.0),
        # 22:00 at UTC-5 is 03:00 UTC the next day.
        (datetime(2026, 2, 10, 22, 0, tzinfo=timezone(timedelta(hours=-5))), 1.0),
        (datetime(2026, 2, 10, 3, 0, tzinfo=timezone(timedelta(hours=-5))), 0.0),
    ],
)
def test_is_night_means_hours_0_to_5_utc(occurred_at: datetime, night: float) -> None:
    """is_night is 1 for 00:00-05:59 UTC, whatever offset the event was sent with."""
    assert tx_col(transaction(occurred_at=occurred_at), "is_night") == night
    assert order_col(order(occurred_at=occurred_at), "is_night") == night


def test_transaction_one_hots_sum_to_one_for_known_values() -> None:
    """Channel, category and device one-hots each have exactly one 1 for known values."""
    names = features.TRANSACTION_FEATURES
    for category in features.TX_CATEGORIES:
        for channel in features.TX_CHANNELS:
            tx = transaction(merchant_category=category, channel=channel)
            row = features.transaction_row(tx)
            cats = [v for n, v in zip(names, row, strict=True) if n.startswith("category=")]
            chans = [v for n, v in zip(names, row, strict=True) if n.startswith("channel=")]
            assert sum(cats) == 1.0
            assert sum(chans) == 1.0
            assert column(row, names, f"category={category}") == 1.0
            assert column(row, names, "category=other") == 0.0
            assert column(row, names, f"channel={channel}") == 1.0
    for kind in features.DEVICE_KINDS:
        row = features.transaction_row(
            transaction(device=Device(device_id="d", kind=kind, is_new=False))
        )
        devices = [v for n, v in zip(names, row, strict=True) if n.startswith("device=")]
        assert sum(devices) == 1.0
        assert column(row, names, f"device={kind}") == 1.0


def test_unknown_merchant_category_sets_category_other() -> None:
    """A category outside the vocabulary sets only category=other."""
    names = features.TRANSACTION_FEATURES
    row = features.transaction_row(transaction(merchant_category="pet_supplies"))
    assert column(row, names, "category=other") == 1.0
    cats = [v for n, v in zip(names, row, strict=True) if n.startswith("category=")]
    assert sum(cats) == 1.0


def test_order_row_describes_lines_countries_and_payment() -> None:
    """An order row holds totals, line stats, country mismatch, first order and payment."""
    o = order()
    row = features.order_row(o)
    names = features.ORDER_FEATURES
    assert len(row) == len(names)
    assert len(set(names)) == len(names)
    assert column(row, names, "log_total") == pytest.approx(math.log1p(515.0))
    assert column(row, names, "n_lines") == 2.0
    assert column(row, names, "total_quantity") == 7.0
    assert column(row, names, "max_quantity") == 5.0
    assert column(row, names, "log_max_unit_price") == pytest.approx(math.log1p(99.0))
    assert column(row, names, "billing_ne_shipping") == 0.0
    assert column(row, names, "first_order") == 0.0
    assert column(row, names, "is_night") == 0.0
    assert column(row, names, "payment=gift_card") == 1.0
    assert order_col(order(shipping_country="NG"), "billing_ne_shipping") == 1.0
    assert order_col(order(first_order=True), "first_order") == 1.0


def test_order_payment_one_hot_sums_to_one() -> None:
    """Each payment method sets exactly its own column."""
    names = features.ORDER_FEATURES
    for method in features.PAYMENT_METHODS:
        row = features.order_row(order(payment_method=method))
        pay = [v for n, v in zip(names, row, strict=True) if n.startswith("payment=")]
        assert sum(pay) == 1.0
        assert column(row, names, f"payment={method}") == 1.0


def test_matrices_are_one_row_per_event_in_order() -> None:
    """The batch matrices stack the single-event rows in input order."""
    txs = [transaction(), transaction(amount=5.0, country="US")]
    assert features.transaction_matrix(txs) == [features.transaction_row(t) for t in txs]
    orders = [order(), order(first_order=True)]
    assert features.order_matrix(orders) == [features.order_row(o) for o in orders]
    assert features.transaction_matrix([]) == []


def test_ticket_text_puts_subject_before_body() -> None:
    """The ticket models read the subject, a newline, then the body."""
    ticket = Ticket(
        event_id="tkt-1",
        occurred_at=NOON_UTC,
        customer_id="cust-1",
        channel="email",
        subject="Refund please",
        body="I was charged twice.",
        customer_tier="free",
    )
    assert features.ticket_text(ticket) == "Refund please\nI was charged twice."


# --- the first models -------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(trained_models: Path) -> dict[str, LoadedModel]:
    return load_or_train(trained_models)


@pytest.fixture(scope="module")
def scorer(models: dict[str, LoadedModel]) -> Scorer:
    return Scorer(models)


def test_first_start_up_trains_all_four_models_as_v1(trained_models: Path) -> None:
    """Each first model has a CHAMPION pointing at v1 with its skops file and meta.json."""
    assert sorted(p.name for p in trained_models.iterdir()) == sorted(MODEL_NAMES)
    for name in MODEL_NAMES:
        assert (trained_models / name / "CHAMPION").read_text().strip() == "1"
        assert champion_version(trained_models, name) == 1
        folder = trained_models / name / "v1"
        assert (folder / "model.skops").is_file()
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["name"] == name
        assert meta["version"] == 1
        assert len(meta["sha256"]) == 64
        assert meta["metrics"]
        spec = next(s for s in SPECS if s.name == name)
        assert tuple(meta["features"]) == spec.feature_names


def test_load_or_train_loads_existing_champions_without_retraining(trained_models: Path) -> None:
    """With champions on disk, load_or_train loads v1 and writes nothing."""

    def snapshot() -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(trained_models)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in trained_models.rglob("*")
        }

    before = snapshot()
    progress: list[str] = []
    loaded = load_or_train(trained_models, on_progress=progress.append)

    assert progress == []
    assert snapshot() == before
    assert sorted(loaded) == sorted(MODEL_NAMES)
    for name, model in loaded.items():
        assert model.meta.version == 1
        assert model.meta.tag == "v1"
        assert model.spec.name == name
        assert not (trained_models / name / "v2").exists()


def test_first_models_score_well_on_fresh_simulator_data(scorer: Scorer) -> None:
    """Quality gate on unseen traffic (seed 99): fraud AUC > 0.8, risk > 0.75, category > 0.9."""
    txs, tx_labels = training_set("transaction", 4000, seed=99)
    fraud = [s["fraud"] for s in scorer.score("transaction", txs)]
    fraud_auc = roc_auc_score([int(bool(lab["fraud"])) for lab in tx_labels], fraud)

    orders, order_labels = training_set("order", 4000, seed=99)
    risk = [s["risk"] for s in scorer.score("order", orders)]
    risk_auc = roc_auc_score([int(bool(lab["problem"])) for lab in order_labels], risk)

    tickets, ticket_labels = training_set("ticket", 4000, seed=99)
    ticket_scores = scorer.score("ticket", tickets)
    category_acc = accuracy_score(
        [lab["category"] for lab in ticket_labels], [s["category"] for s in ticket_scores]
    )
    urgency_acc = accuracy_score(
        [lab["urgency"] for lab in ticket_labels], [s["urgency"] for s in ticket_scores]
    )

    quality = {
        "fraud_auc": fraud_auc,
        "risk_auc": risk_auc,
        "category_acc": category_acc,
        "urgency_acc": urgency_acc,
    }
    assert fraud_auc > 0.8, quality
    assert risk_auc > 0.75, quality
    assert category_acc > 0.9, quality
    assert urgency_acc > 0.8, quality


# --- the scorer -------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ["transaction", "order", "ticket"])
def test_scorer_gives_each_event_its_types_score_keys(scorer: Scorer, event_type: str) -> None:
    """One score dict per event with exactly SCORE_TYPES keys; numbers lie in [0, 1]."""
    events, _ = training_set(event_type, 25, seed=42)
    scores = scorer.score(event_type, events)
    kinds = SCORE_TYPES[event_type]
    assert len(scores) == len(events)
    for row in scores:
        assert set(row) == set(kinds)
        for key, kind in kinds.items():
            value = row[key]
            if kind == "number":
                assert isinstance(value, float)
                assert 0.0 <= value <= 1.0
            else:
                assert isinstance(value, str)
                assert value


def test_scorer_labels_come_from_the_models_classes(
    scorer: Scorer, models: dict[str, LoadedModel]
) -> None:
    """Ticket category and urgency are among the classes recorded with each model."""
    events, _ = training_set("ticket", 25, seed=43)
    categories = set(models["ticket.category"].meta.classes)
    urgencies = set(models["ticket.urgency"].meta.classes)
    assert categories
    assert urgencies
    for row in scorer.score("ticket", events):
        assert row["category"] in categories
        assert row["urgency"] in urgencies


def test_scorer_scores_a_batch_like_single_events(scorer: Scorer) -> None:
    """Scoring a batch gives the same scores as scoring each event alone."""
    events, _ = training_set("transaction", 8, seed=44)
    batch = scorer.score("transaction", events)
    alone = [scorer.score("transaction", [e])[0] for e in events]
    assert batch == alone


def test_scorer_of_an_empty_batch_is_empty(scorer: Scorer) -> None:
    """No events, no scores (and no model call)."""
    for event_type in SCORE_TYPES:
        assert scorer.score(event_type, []) == []


def test_scorer_versions_name_the_models_of_a_type(scorer: Scorer) -> None:
    """versions() maps each model of the type to its version tag."""
    assert scorer.versions("transaction") == {"transaction.fraud": "v1"}
    assert scorer.versions("order") == {"order.risk": "v1"}
    assert scorer.versions("ticket") == {"ticket.category": "v1", "ticket.urgency": "v1"}
    assert scorer.versions("invoice") == {}


# --- artifacts --------------------------------------------------------------------------


def meta_for(name: str, version: int, **changes: Any) -> ModelMeta:
    fields: dict[str, Any] = {
        "name": name,
        "version": version,
        "kind": "binary",
        "features": ("x",),
        "metrics": {"roc_auc": 1.0},
        "created_at": "2026-01-01T00:00:00+00:00",
        "trained_on": "test",
    }
    fields.update(changes)
    return ModelMeta(**fields)


def tiny_model() -> LogisticRegression:
    return LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])


def copy_model(trained_models: Path, tmp_path: Path, name: str) -> Path:
    models_dir = tmp_path / "models"
    shutil.copytree(trained_models / name, models_dir / name)
    return models_dir


def test_save_then_load_round_trips_model_and_meta(tmp_path: Path) -> None:
    """A saved model loads back with its meta (checksum filled in) and predicts the same."""
    model = tiny_model()
    stored = save_model(tmp_path, meta_for("t.m", 1), model)
    assert len(stored.sha256) == 64
    assert champion_version(tmp_path, "t.m") == 1

    meta, loaded = load_model(tmp_path, "t.m", 1)

    assert meta == stored
    assert loaded.predict_proba([[2.5]]).tolist() == model.predict_proba([[2.5]]).tolist()


def test_copied_trusted_tree_model_loads(trained_models: Path, tmp_path: Path) -> None:
    """A gradient-boosting artifact (TreePredictor on TRUSTED_TYPES) loads from a copy."""
    models_dir = copy_model(trained_models, tmp_path, "order.risk")
    meta, estimator = load_model(models_dir, "order.risk", 1)
    assert meta.features == features.ORDER_FEATURES
    assert estimator.predict_proba(np.zeros((1, len(meta.features)))).shape == (1, 2)


def test_model_file_changed_by_one_byte_is_refused(trained_models: Path, tmp_path: Path) -> None:
    """One flipped byte in model.skops fails the checksum, naming the file."""
    models_dir = copy_model(trained_models, tmp_path, "order.risk")
    model_path = models_dir / "order.risk" / "v1" / "model.skops"
    data = bytearray(model_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    model_path.write_bytes(bytes(data))

    with pytest.raises(ConfigError, match="checksum") as caught:
        load_model(models_dir, "order.risk", 1)
    assert str(model_path) in str(caught.value)


def test_missing_meta_json_is_refused_naming_the_folder(
    trained_models: Path, tmp_path: Path
) -> None:
    """A version folder without meta.json is reported as incomplete, naming the folder."""
    models_dir = copy_model(trained_models, tmp_path, "order.risk")
    folder = models_dir / "order.risk" / "v1"
    (folder / "meta.json").unlink()
    with pytest.raises(ConfigError, match="incomplete") as caught:
        load_model(models_dir, "order.risk", 1)
    assert str(folder) in str(caught.value)


def test_missing_version_folder_is_refused(tmp_path: Path) -> None:
    """A version that was never saved is refused, naming where it was looked for."""
    with pytest.raises(ConfigError, match="incomplete") as caught:
        load_model(tmp_path, "t.m", 3)
    assert str(tmp_path / "t.m" / "v3") in str(caught.value)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"name": "t.m"}', "null"])
def test_unreadable_meta_json_is_refused(tmp_path: Path, text: str) -> None:
    """A meta.json that is not a valid model record is refused naming meta.json."""
    save_model(tmp_path, meta_for("t.m", 1), tiny_model())
    meta_path = tmp_path / "t.m" / "v1" / "meta.json"
    meta_path.write_text(text)
    with pytest.raises(ConfigError, match="not a valid model record") as caught:
        load_model(tmp_path, "t.m", 1)
    assert str(meta_path) in str(caught.value)


@pytest.mark.parametrize("junk", ["v1", "latest", "1.0", "-1", "one\n"])
def test_champion_pointer_with_junk_is_refused(tmp_path: Path, junk: str) -> None:
    """A CHAMPION file that is not a version number is refused, naming the file."""
    save_model(tmp_path, meta_for("t.m", 1), tiny_model())
    pointer = tmp_path / "t.m" / "CHAMPION"
    pointer.write_text(junk)
    with pytest.raises(ConfigError, match="version number") as caught:
        champion_version(tmp_path, "t.m")
    assert str(pointer) in str(caught.value)


def test_champion_pointer_with_unicode_digit_is_refused(tmp_path: Path) -> None:
    """A CHAMPION holding a non-ASCII digit is refused as a ConfigError too."""
    (tmp_path / "t.m").mkdir()
    (tmp_path / "t.m" / "CHAMPION").write_text("\u00b2\n")
    with pytest.raises(ConfigError, match="version number"):
        champion_version(tmp_path, "t.m")


def test_champion_version_without_pointer_is_none(tmp_path: Path) -> None:
    """No CHAMPION file means no champion yet."""
    assert champion_version(tmp_path, "t.m") is None


def test_save_model_refuses_to_overwrite_a_version(tmp_path: Path) -> None:
    """Saving an existing version raises FileExistsError and leaves the original intact."""
    save_model(tmp_path, meta_for("t.m", 1), tiny_model())
    original = (tmp_path / "t.m" / "v1" / "model.skops").read_bytes()
    with pytest.raises(FileExistsError):
        save_model(tmp_path, meta_for("t.m", 1, trained_on="other"), tiny_model())
    assert (tmp_path / "t.m" / "v1" / "model.skops").read_bytes() == original
    assert load_model(tmp_path, "t.m", 1)[0].trained_on == "test"


def test_next_version_counts_up_from_the_highest_saved(tmp_path: Path) -> None:
    """next_version is 1 with nothing saved, then one past the highest vN folder."""
    assert next_version(tmp_path, "t.m") == 1
    save_model(tmp_path, meta_for("t.m", 1), tiny_model())
    assert next_version(tmp_path, "t.m") == 2
    save_model(tmp_path, meta_for("t.m", 2), tiny_model())
    assert next_version(tmp_path, "t.m") == 3
    assert champion_version(tmp_path, "t.m") == 2
    (tmp_path / "t.m" / "v10").mkdir()
    (tmp_path / "t.m" / "vnext").mkdir()
    (tmp_path / "t.m" / "v99.txt").write_text("")
    assert next_version(tmp_path, "t.m") == 11


def test_untrusted_object_type_is_refused_even_with_a_valid_checksum(tmp_path: Path) -> None:
    """A skops file holding a type off TRUSTED_TYPES (numpy.sum) is refused by name."""
    estimator = FunctionTransformer(np.sum)
    save_model(tmp_path, meta_for("t.evil", 1), estimator)  # records a matching checksum
    assert "numpy.sum" not in TRUSTED_TYPES

    with pytest.raises(ConfigError, match="object types Arbiter does not load") as caught:
        load_model(tmp_path, "t.evil", 1)
    assert "numpy.sum" in str(caught.value)
    assert str(tmp_path / "t.evil" / "v1" / "model.skops") in str(caught.value)
