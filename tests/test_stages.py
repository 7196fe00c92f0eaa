"""Unit tests of the pure hot-path stages: records in, decisions and dead letters out.

No broker and no database: batches come from the simulator, rule outcomes are real
``RuleResult`` values.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import pytest

from app.core.records import decision_from_record, decision_record
from app.core.stages import (
    Rejected,
    Valid,
    assemble_decisions,
    dead_letter_headers,
    decode_batch,
    first_of_each_event,
    guess_event_id,
    rule_facts,
)
from app.errors import InvalidEvent
from app.rules.runtime.result import RuleResult
from app.simulator.generate import SimEvent, generate
from app.values import InRecord
from schemas import Decision
from tests.shipped import TYPES

LIMIT = 65_536
RECEIVED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
TOPICS = {t: f"decisions.{t}" for t in ("transaction", "order", "ticket")}


def sim_batch(n: int = 200, *, seed: int = 11, malformed_rate: float = 0.2) -> list[SimEvent]:
    return list(generate(n, seed=seed, malformed_rate=malformed_rate, max_event_bytes=LIMIT))


def as_record(sim: SimEvent, offset: int, partition: int = 0) -> InRecord:
    return InRecord(
        event_type=sim.event_type,
        topic=f"events.{sim.event_type}",
        partition=partition,
        offset=offset,
        key=sim.key,
        value=sim.value,
        timestamp_ms=1_772_366_400_000 + offset,
    )


def as_records(sims: list[SimEvent]) -> list[InRecord]:
    return [as_record(s, i) for i, s in enumerate(sims)]


def valid_items(n: int = 6, *, seed: int = 5) -> list[Valid]:
    valid, rejected = decode_batch(
        as_records(sim_batch(n, seed=seed, malformed_rate=0.0)),
        max_bytes=LIMIT,
        models=TYPES.models,
    )
    assert not rejected
    return valid


# --- decode_batch ---------------------------------------------------------------------


def test_decode_batch_splits_valid_and_rejected_in_order() -> None:
    """A mixed batch splits into valid events and rejects, each list in arrival order."""
    sims = sim_batch()
    records = as_records(sims)
    valid, rejected = decode_batch(records, max_bytes=LIMIT, models=TYPES.models)

    expect_valid = [r for r, s in zip(records, sims, strict=True) if s.malformed is None]
    expect_rejected = [r for r, s in zip(records, sims, strict=True) if s.malformed]
    assert expect_valid
    assert len(expect_rejected) >= 20  # the batch really is mixed
    assert [v.record for v in valid] == expect_valid
    assert [r.record for r in rejected] == expect_rejected


def test_decode_batch_gives_each_reject_the_simulators_reason() -> None:
    """Every broken message is rejected with the reason the simulator planted."""
    sims = sim_batch()
    _, rejected = decode_batch(as_records(sims), max_bytes=LIMIT, models=TYPES.models)
    expected = [s.malformed for s in sims if s.malformed]
    assert [r.error.reason for r in rejected] == expected
    assert all(isinstance(r.error, InvalidEvent) and r.error.detail for r in rejected)
    assert {r.error.reason for r in rejected} >= {"malformed_json", "not_an_object", "validation"}


def test_decode_batch_payload_is_the_events_json_dump() -> None:
    """Each Valid carries its typed event and payload == event.model_dump(mode='json')."""
    sims = sim_batch()
    valid, _ = decode_batch(as_records(sims), max_bytes=LIMIT, models=TYPES.models)
    good = [s for s in sims if s.malformed is None]
    for item, sim in zip(valid, good, strict=True):
        assert item.event.event_type == sim.event_type
        assert item.event.event_id == sim.event_id
        assert item.payload == item.event.model_dump(mode="json")
        assert item.payload == json.loads(sim.value)


def test_decode_batch_of_nothing_is_two_empty_lists() -> None:
    """An empty batch decodes to no valid events and no rejects."""
    assert decode_batch([], max_bytes=LIMIT, models=TYPES.models) == ([], [])


# --- first_of_each_event ----------------------------------------------------------------


def test_first_of_each_event_keeps_first_copy_and_returns_repeats() -> None:
    """Later copies of an event_id in the batch are repeats; the first copy is kept."""
    sims = sim_batch(4, seed=3, malformed_rate=0.0)
    a, b, c, d = sims
    # a and c are redelivered later in the batch, a twice, from other offsets.
    order = [a, b, a, c, d, c, a]
    valid, _ = decode_batch(as_records(order), max_bytes=LIMIT, models=TYPES.models)

    first, repeats = first_of_each_event(valid)

    assert [v.event.event_id for v in first] == [s.event_id for s in sims]
    assert [v.record.offset for v in first] == [0, 1, 3, 4]
    assert [v.event.event_id for v in repeats] == [a.event_id, c.event_id, a.event_id]
    assert [v.record.offset for v in repeats] == [2, 5, 6]


def test_first_of_each_event_without_duplicates_returns_no_repeats() -> None:
    """A batch of distinct events passes through whole, in order."""
    valid = valid_items()
    first, repeats = first_of_each_event(valid)
    assert first == valid
    assert repeats == []


# --- rule_facts -------------------------------------------------------------------------


def test_rule_facts_adds_scores_without_mutating_inputs() -> None:
    """The fact is the payload plus the scores under 'scores'; neither input changes."""
    item = valid_items(1)[0]
    payload = item.payload
    scores = {"fraud": 0.93}
    payload_before, scores_before = copy.deepcopy(payload), dict(scores)

    fact = rule_facts(payload, scores)

    assert fact == {**payload_before, "scores": {"fraud": 0.93}}
    assert payload == payload_before
    assert "scores" not in payload
    assert scores == scores_before
    fact["scores"]["fraud"] = 0.0
    fact["extra"] = 1
    assert scores == scores_before
    assert "extra" not in payload


# --- assemble_decisions -----------------------------------------------------------------


def test_assemble_decisions_one_decision_per_event_with_its_provenance() -> None:
    """Each event gets its rule's decision, reasons, scores, versions, key and latency."""
    items = valid_items(3)
    scores = [{"s": 0.1}, {"s": 0.95}, {"s": "x"}]
    outcomes = [
        RuleResult("approve", None, "no rule matched: default"),
        RuleResult("decline", "very_high_score", "score above 0.9"),
        RuleResult("review", "odd_one", "looks odd"),
    ]
    versions = {t: {f"{t}.model": "v3"} for t in TOPICS}
    decided_at = RECEIVED + timedelta(milliseconds=12.5)

    decisions = assemble_decisions(
        items,
        scores,
        outcomes,
        model_versions=versions,
        decisions_topic=TOPICS,
        received_at=RECEIVED,
        decided_at=decided_at,
    )

    assert len(decisions) == 3
    for decision, item, score, outcome in zip(decisions, items, scores, outcomes, strict=True):
        event = item.event
        assert isinstance(decision, Decision)
        assert decision.event_id == event.event_id
        assert decision.event_type == event.event_type
        assert decision.partition_key == event.partition_key
        assert decision.decision == outcome.decision
        assert decision.reasons == (outcome.reason,)
        assert decision.scores == score
        assert decision.model_versions == {f"{event.event_type}.model": "v3"}
        assert decision.actions == ({"type": "publish", "topic": f"decisions.{event.event_type}"},)
        assert decision.occurred_at == event.occurred_at
        assert decision.decided_at == decided_at
        assert decision.latency_ms == 12.5
    assert decisions[0].rules_fired == ()
    assert decisions[1].rules_fired == ("very_high_score",)
    assert decisions[2].rules_fired == ("odd_one",)


def test_assemble_decisions_without_versions_for_a_type_records_none() -> None:
    """A type with no model versions gets an empty model_versions, not an error."""
    items = valid_items(2)
    decisions = assemble_decisions(
        items,
        [{}, {}],
        [RuleResult("approve", None, "default")] * 2,
        model_versions={},
        decisions_topic=TOPICS,
        received_at=RECEIVED,
        decided_at=RECEIVED,
    )
    assert [d.model_versions for d in decisions] == [{}, {}]
    assert [d.latency_ms for d in decisions] == [0.0, 0.0]


def test_assemble_decisions_latency_is_never_negative() -> None:
    """A decided_at earlier than received_at (clock step) gives latency 0, not negative."""
    items = valid_items(1)
    (decision,) = assemble_decisions(
        items,
        [{}],
        [RuleResult("approve", None, "default")],
        model_versions={},
        decisions_topic=TOPICS,
        received_at=RECEIVED,
        decided_at=RECEIVED - timedelta(seconds=2),
    )
    assert decision.latency_ms == 0.0


def test_assemble_decisions_refuses_mismatched_lengths() -> None:
    """Scores or outcomes that do not line up with the events are an error, not a guess."""
    items = valid_items(2)
    with pytest.raises(ValueError, match="zip"):
        assemble_decisions(
            items,
            [{}],
            [RuleResult("approve", None, "default")] * 2,
            model_versions={},
            decisions_topic=TOPICS,
            received_at=RECEIVED,
            decided_at=RECEIVED,
        )


# --- dead letters -----------------------------------------------------------------------


def test_dead_letter_headers_name_reason_detail_and_source() -> None:
    """Dead-letter headers carry reason, detail and the source topic/partition/offset."""
    record = InRecord("order", "events.order", 7, 1234, b"cust-1", b"{not json", 0)
    rejected = Rejected(record, InvalidEvent("malformed_json", "the event is not valid JSON"))
    headers = dict(dead_letter_headers(rejected))
    assert headers == {
        "arbiter.reason": b"malformed_json",
        "arbiter.detail": b"the event is not valid JSON",
        "arbiter.source.topic": b"events.order",
        "arbiter.source.partition": b"7",
        "arbiter.source.offset": b"1234",
    }


def test_dead_letter_headers_cap_a_long_detail() -> None:
    """A very long detail is cut to 4096 bytes so the header stays bounded."""
    record = InRecord("ticket", "events.ticket", 0, 1, None, b"[]", 0)
    rejected = Rejected(record, InvalidEvent("validation", "x" * 10_000))
    headers = dict(dead_letter_headers(rejected))
    assert headers["arbiter.detail"] == b"x" * 4096


def test_dead_letter_headers_for_simulated_rejects_match_the_reason() -> None:
    """Every simulated reject's headers name its planted reason and its own offset."""
    sims = sim_batch()
    _, rejected = decode_batch(as_records(sims), max_bytes=LIMIT, models=TYPES.models)
    for r in rejected:
        headers = dict(dead_letter_headers(r))
        assert headers["arbiter.reason"] == r.error.reason.encode()
        assert headers["arbiter.source.offset"] == str(r.record.offset).encode()
        assert headers["arbiter.source.topic"] == r.record.topic.encode()


def test_guess_event_id_finds_the_id_of_simulated_rejects() -> None:
    """An invalid but readable record yields its event_id; unreadable ones yield None."""
    sims = [s for s in sim_batch() if s.malformed]
    assert any(s.event_id for s in sims)
    assert any(s.event_id is None for s in sims)
    for sim in sims:
        assert guess_event_id(sim.value) == sim.event_id


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json at all",
        b"\xff\xfe\x00garbage",
        b'{"event_id": "ord-1"',
        b'[{"event_id": "ord-1"}]',
        b'{"event_id": 42}',
        b'{"event_id": ""}',
        b'{"event_id": "' + b"x" * 65 + b'"}',
        b'"ord-1"',
    ],
)
def test_guess_event_id_returns_none_when_no_usable_id(raw: bytes) -> None:
    """Non-JSON, non-objects and ids that are not short strings give None."""
    assert guess_event_id(raw) is None


def test_guess_event_id_of_invalid_json_object() -> None:
    """A JSON object that fails validation still gives up its event_id."""
    raw = json.dumps({"event_id": "txn-77", "amount": "free"}).encode()
    assert guess_event_id(raw) == "txn-77"


def test_guess_event_id_of_deeply_nested_json_is_none() -> None:
    """A deeply nested document (a rejected malformed_json record) gives None, not a crash."""
    raw = b"[" * 5_000
    _, rejected = decode_batch(
        [InRecord("order", "events.order", 0, 0, None, raw, 0)],
        max_bytes=LIMIT,
        models=TYPES.models,
    )
    assert [r.error.reason for r in rejected] == ["malformed_json"]
    assert guess_event_id(raw) is None


# --- ledger round trip ------------------------------------------------------------------


def test_decision_record_round_trips_a_decision_unchanged() -> None:
    """decision_record then decision_from_record gives back the same Decision."""
    items = valid_items(3)
    decisions = assemble_decisions(
        items,
        [{"fraud": 0.25}, {"risk": 0.5}, {"category": "billing", "category_confidence": 0.9}],
        [
            RuleResult("approve", None, "default"),
            RuleResult("review", "r1", "because"),
            RuleResult("route", "r2", "billing queue"),
        ],
        model_versions={t: {f"{t}.m": "v1"} for t in TOPICS},
        decisions_topic=TOPICS,
        received_at=RECEIVED,
        decided_at=RECEIVED + timedelta(milliseconds=3.25),
    )
    for decision, item in zip(decisions, items, strict=True):
        record = decision_record(decision, item)
        assert record.payload == item.payload
        assert (record.source_topic, record.source_partition, record.source_offset) == (
            item.record.topic,
            item.record.partition,
            item.record.offset,
        )
        back = decision_from_record(record)
        assert back == decision
        assert back.model_dump_json() == decision.model_dump_json()
