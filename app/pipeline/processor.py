"""The batch processor: the thin I/O shell around the pure stages.

For one consumed batch it decodes, drops what the ledger has already decided, scores
and runs the rules (one worker-thread call for the whole batch: one ``predict_proba``
per model, one rules pass per type), stores decisions and dead letters in one
transaction (with the webhook deliveries they owe: the outbox), publishes them, and
marks them published. Offsets are committed by the caller only after ``process``
returns.

Exactly one decision per ``event_id``: the ledger's unique key decides who wins; a
redelivered event whose decision is stored but was never published (a crash between
store and publish) is re-published from the ledger, never decided again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import structlog

from app.errors import InvalidEvent
from app.inference.scoring import ScoredBatch, Scorer
from app.metrics import OUTCOMES, observe_batch
from app.outbox.config import Endpoints
from app.outbox.plan import plan_batch
from app.pipeline.correlation import Correlator, window_specs
from app.pipeline.stages import (
    Rejected,
    RuleOutcome,
    Valid,
    assemble_decisions,
    dead_letter_headers,
    decode_batch,
    decode_outcomes,
    first_of_each_event,
    guess_event_id,
    rule_facts,
    utcnow,
)
from app.rules.language.spec import RuleSet
from app.rules.runtime.engine import RulesEngine
from app.store.ledger import Ledger
from app.store.outcomes import OutcomeStore
from app.values import (
    BatchResult,
    DeadLetterRecord,
    DecisionRecord,
    InRecord,
    OutMessage,
    RecordOutcome,
    StoredDecision,
)
from schemas import Decision, Outcome

log = structlog.get_logger("arbiter.processor")

Publish = Callable[[Sequence[OutMessage]], Awaitable[None]]
Position = tuple[str, int, int]


def decision_record(
    decision: Decision, item: Valid, shadow_scores: dict[str, Any] | None = None
) -> DecisionRecord:
    return DecisionRecord(
        event_id=decision.event_id,
        event_type=decision.event_type,
        partition_key=decision.partition_key,
        decision=decision.decision,
        actions=[dict(a) for a in decision.actions],
        scores=dict(decision.scores),
        model_versions=dict(decision.model_versions),
        rules_fired=list(decision.rules_fired),
        reasons=list(decision.reasons),
        payload=item.payload,
        latency_ms=decision.latency_ms,
        occurred_at=decision.occurred_at,
        decided_at=decision.decided_at,
        source_topic=item.record.topic,
        source_partition=item.record.partition,
        source_offset=item.record.offset,
        ruleset_version=decision.ruleset_version,
        explanations={k: dict(v) for k, v in decision.explanations.items()},
        shadow_scores=dict(shadow_scores or {}),
    )


def decision_from_record(record: DecisionRecord) -> Decision:
    return Decision(
        event_id=record.event_id,
        event_type=record.event_type,
        partition_key=record.partition_key,
        decision=record.decision,
        actions=record.actions,
        scores=record.scores,
        model_versions=record.model_versions,
        rules_fired=record.rules_fired,
        reasons=record.reasons,
        occurred_at=record.occurred_at,
        decided_at=record.decided_at,
        latency_ms=record.latency_ms,
        ruleset_version=record.ruleset_version,
        explanations=record.explanations,
    )


def dead_letter_record(rejected: Rejected, at: datetime) -> DeadLetterRecord:
    record = rejected.record
    return DeadLetterRecord(
        event_type=record.event_type,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        event_id=guess_event_id(record.value),
        reason=rejected.error.reason,
        detail=rejected.error.detail,
        raw=record.value,
        key=record.key,
        created_at=at,
    )


def _log_dead_letter(rejected: Rejected) -> None:
    """One line per dead letter, bound to where it came from (never the payload itself)."""
    record = rejected.record
    with structlog.contextvars.bound_contextvars(
        event_type=record.event_type,
        event_id=guess_event_id(record.value),
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    ):
        log.warning("dead letter", reason=rejected.error.reason, detail=rejected.error.detail)


def _single_threaded_math() -> None:
    """Score with one OpenMP thread on the decide worker.

    For a batch of a few hundred rows, gradient boosting's OpenMP team costs more than it
    saves, and its spinning threads compete with the event loop and durable_rules for the
    same cores. (OpenMP thread counts are per calling thread, so this only affects the
    worker.)
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="openmp")


def _text_thread(threads: int) -> None:
    """The text encoder's own thread: torch gets ``threads`` intra-op threads, so the
    tabular models, the rules and the event loop keep a core while tickets encode."""
    from app.inference.encoder import configure_threads

    configure_threads(threads)


class BatchProcessor:
    def __init__(
        self,
        *,
        ledger: Ledger,
        scorer: Scorer,
        rules: RulesEngine,
        publish: Publish,
        topic_for: Callable[[str, str], str],
        max_event_bytes: int,
        text_threads: int = 1,
        outcomes: OutcomeStore | None = None,
        endpoints: Endpoints | None = None,
    ) -> None:
        self._ledger = ledger
        self._outcomes = outcomes
        # Webhook endpoints: new decisions' deliveries go into the outbox with them.
        self._endpoints = endpoints
        self.scorer = scorer
        self._rules = rules
        self._publish = publish
        self._topic_for = topic_for
        self._max_event_bytes = max_event_bytes
        # One thread for scoring + rules: durable_rules must be driven from a single
        # thread, and one call per batch keeps the hand-off cost off each event.
        self._worker = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="arbiter-decide", initializer=_single_threaded_math
        )
        # Text models encode on their own thread, concurrently with the tabular scoring.
        self._text_worker = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="arbiter-text",
            initializer=_text_thread,
            initargs=(text_threads,),
        )
        self._windows = Correlator(window_specs(rules.rulesets), ledger, self._worker)
        # One batch at a time: the consume loop and synchronous callers (the HTTP API's
        # /v1/decide) share the windows, the rules engine and the decide thread.
        self._busy = asyncio.Lock()

    def swap_scorer(self, scorer: Scorer) -> None:
        """Put other model versions in service; called between batches only."""
        self.scorer = scorer

    async def swap_rules(self, rulesets: Mapping[str, RuleSet]) -> None:
        """Put new rulesets in service between batches, on the decide thread (durable_rules is
        driven from that one thread only); their windows keep or seed their state."""
        async with self._busy:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._worker, self._rules.replace, rulesets)
            await self._windows.reconfigure(window_specs(rulesets))

    def close(self) -> None:
        self._worker.shutdown(wait=True)
        self._text_worker.shutdown(wait=True)

    def _decide(
        self, fresh: Sequence[Valid], received_at: datetime
    ) -> list[tuple[Decision, Valid, dict[str, Any]]]:
        """Score and apply rules to the events nobody decided yet (runs on the worker)."""
        scorer = self.scorer  # one scorer for the whole batch, even if a swap is pending
        by_type: dict[str, list[Valid]] = {}
        for item in fresh:
            by_type.setdefault(item.event.event_type, []).append(item)
        scored: dict[str, ScoredBatch] = {}
        text_jobs = {
            t: self._text_worker.submit(scorer.score_batch, t, [i.event for i in items])
            for t, items in by_type.items()
            if scorer.uses_text(t)
        }
        for event_type, items in by_type.items():
            if event_type not in text_jobs:
                scored[event_type] = scorer.score_batch(event_type, [i.event for i in items])
        for event_type, job in text_jobs.items():
            scored[event_type] = job.result()
        facts: dict[int, dict[str, Any]] = {}
        for event_type, items in by_type.items():
            for item, score in zip(items, scored[event_type].scores, strict=True):
                facts[id(item)] = rule_facts(item.payload, score)
        if self._windows.active:
            # In record order across types: "a ticket, then a transfer" must see the ticket.
            for item in fresh:
                fact = facts[id(item)]
                event = item.event
                fact["windows"] = self._windows.observe(
                    event.event_type, event.partition_key, event.occurred_at, fact
                )
        out: list[tuple[Decision, Valid, dict[str, Any]]] = []
        decided_at = utcnow()
        for event_type, items in by_type.items():
            batch_facts = [facts[id(i)] for i in items]
            outcomes: Sequence[RuleOutcome] = self._rules.evaluate(event_type, batch_facts)
            decided_at = utcnow()
            result = scored[event_type]
            decisions = assemble_decisions(
                items,
                [f["scores"] for f in batch_facts],
                outcomes,
                explanations=result.explanations,
                model_versions={event_type: result.versions},
                decisions_topic={event_type: self._topic_for("decisions", event_type)},
                received_at=received_at,
                decided_at=decided_at,
            )
            out.extend(zip(decisions, items, result.shadow, strict=True))
        return out

    def decision_messages(self, decision: Decision) -> list[OutMessage]:
        """The decision on ``decisions.<type>`` and on every topic a ``publish`` action names."""
        topics = [self._topic_for("decisions", decision.event_type)]
        for action in decision.actions:
            if action.get("type") == "publish" and action.get("topic") not in topics:
                topics.append(str(action["topic"]))
        value = decision.model_dump_json().encode()
        key = decision.partition_key.encode()
        headers = (("arbiter.event_type", decision.event_type.encode()),)
        return [OutMessage(topic, key, value, headers) for topic in topics]

    def _dead_letter_message(self, rejected: Rejected) -> OutMessage:
        return OutMessage(
            topic=self._topic_for("dlq", rejected.record.event_type),
            key=rejected.record.key,
            value=rejected.record.value,
            headers=dead_letter_headers(rejected),
        )

    async def quarantine(self, record: InRecord, error: BaseException) -> BatchResult:
        """Dead-letter one record that processing keeps failing on (a poison event), so its
        partition moves on; the original bytes and the error are kept for replay."""
        reason = InvalidEvent(
            "processing_error",
            f"deciding this event failed repeatedly ({type(error).__name__}: {error}); "
            "fix the cause (rule, model or bug) and replay it from the dead letters",
        )
        rejected = Rejected(record, reason)
        position = (record.topic, record.partition, record.offset)
        stored = await self._ledger.find_dead_letters([position])
        result = BatchResult(records=1)
        if stored.get(position):
            return result
        if position not in stored:
            await self._ledger.record([], [dead_letter_record(rejected, utcnow())])
            result.dead_lettered[(record.event_type, reason.reason)] += 1
        observe_batch(result, ())
        await self._publish([self._dead_letter_message(rejected)])
        await self._ledger.mark_published([], [position], utcnow())
        return result

    async def process(self, records: Sequence[InRecord]) -> BatchResult:
        """Decide one batch; see the module docstring. Raises on failure (the caller
        rewinds); correlation windows are then rebuilt before the next attempt."""
        async with self._busy:
            if self._windows.dirty:
                await self._windows.rebuild()
            try:
                return await self._process(records)
            except BaseException:
                self._windows.dirty = self._windows.active
                raise

    async def _store_outcomes(
        self, records: Sequence[InRecord], result: BatchResult, at: datetime
    ) -> list[Rejected]:
        """Decode and keep the batch's outcomes; returns the ones to dead-letter."""
        outcomes, rejected = decode_outcomes(records, max_bytes=self._max_event_bytes)
        if outcomes:
            if self._outcomes is None:
                raise RuntimeError("outcomes arrived but this processor has no outcome store")
            by_type: dict[str, list[Outcome]] = {}
            for outcome in outcomes:
                by_type.setdefault(outcome.event_type, []).append(outcome)
            for event_type, batch in sorted(by_type.items()):
                counts = await self._outcomes.record(batch, at)
                for name, value in (
                    ("stored", counts.stored),
                    ("before_decision", counts.before_decision),
                    ("duplicate", counts.duplicates),
                ):
                    if value:
                        result.outcomes[(event_type, name)] += value
                        OUTCOMES.labels(type=event_type, result=name).inc(value)
        return rejected

    async def _process(self, records: Sequence[InRecord]) -> BatchResult:
        received_at = utcnow()
        result = BatchResult(records=len(records))
        outcome_records = [r for r in records if r.kind == "outcomes"]
        if outcome_records:
            records = [r for r in records if r.kind != "outcomes"]
        valid, rejected = decode_batch(records, max_bytes=self._max_event_bytes)
        if outcome_records:
            rejected += await self._store_outcomes(outcome_records, result, received_at)
        first, repeats = first_of_each_event(valid)
        result.redelivered += len(repeats)

        stored = await self._ledger.find_decisions([v.event.event_id for v in first])
        fresh = [v for v in first if v.event.event_id not in stored]
        result.redelivered += len(first) - len(fresh)
        # per type, for the metrics: every valid event that is not decided fresh here
        result.redelivered_types.update(
            Counter(v.event.event_type for v in valid) - Counter(v.event.event_type for v in fresh)
        )

        decided: list[tuple[Decision, Valid, dict[str, Any]]] = []
        if fresh:
            loop = asyncio.get_running_loop()
            decided = await loop.run_in_executor(self._worker, self._decide, fresh, received_at)

        positions: list[Position] = [
            (r.record.topic, r.record.partition, r.record.offset) for r in rejected
        ]
        dl_published = await self._ledger.find_dead_letters(positions) if positions else {}
        now = utcnow()
        outcome = await self._ledger.record(
            [decision_record(d, item, shadow) for d, item, shadow in decided],
            [
                dead_letter_record(r, now)
                for r in rejected
                if (r.record.topic, r.record.partition, r.record.offset) not in dl_published
            ],
            deliveries=plan_batch((d for d, _, _ in decided), self._endpoints, now),
        )

        to_publish, published_ids = await self._owed(first, decided, outcome, stored, result, now)
        dl_positions: list[Position] = []
        for r in rejected:
            pos = (r.record.topic, r.record.partition, r.record.offset)
            if dl_published.get(pos):
                continue
            to_publish.append(self._dead_letter_message(r))
            dl_positions.append(pos)
            if pos not in dl_published:
                result.dead_lettered[(r.record.event_type, r.error.reason)] += 1
                _log_dead_letter(r)
        observe_batch(
            result,
            [d for d, _, _ in decided if d.event_id in outcome.inserted_event_ids],
            at=utcnow(),
        )
        await self._publish(to_publish)
        if published_ids or dl_positions:
            await self._ledger.mark_published(published_ids, dl_positions, utcnow())
        return result

    async def _owed(
        self,
        first: Sequence[Valid],
        decided: Sequence[tuple[Decision, Valid, dict[str, Any]]],
        outcome: RecordOutcome,
        stored: Mapping[str, StoredDecision],
        result: BatchResult,
        now: datetime,
    ) -> tuple[list[OutMessage], list[str]]:
        """The decision messages to publish and the event ids they mark published."""
        # Every decision this batch owes the decisions topic, by event: new ones, ones a
        # consumer racing us stored first (it may die before it publishes them), and ones
        # stored by a consumer that died before publishing. They go out in the order their
        # events came in, so a customer's decisions keep their order on the topic.
        owed: dict[str, list[OutMessage]] = {}
        raced: list[str] = []
        for decision, item, _ in decided:
            if decision.event_id in outcome.inserted_event_ids:
                owed[decision.event_id] = self.decision_messages(decision)
                result.decided[(decision.event_type, decision.decision)] += 1
                result.latencies_ms.append(decision.latency_ms)
                result.e2e_ms.append(max(now.timestamp() * 1000.0 - item.record.timestamp_ms, 0.0))
            else:
                raced.append(decision.event_id)
                result.redelivered += 1  # another consumer stored it first: publish theirs
                result.redelivered_types[decision.event_type] += 1
        found = await self._ledger.find_decisions(raced) if raced else {}
        for event_id, prior in found.items():
            owed[event_id] = self.decision_messages(decision_from_record(prior.record))
        for event_id, prior in stored.items():
            if not prior.published:
                owed[event_id] = self.decision_messages(decision_from_record(prior.record))
                result.republished += 1
        in_order = [v.event.event_id for v in first if v.event.event_id in owed]
        to_publish = [message for event_id in in_order for message in owed[event_id]]
        return to_publish, in_order


def summarise(result: BatchResult) -> dict[str, Any]:
    """The fields of the canonical one-line-per-batch log event."""
    return {
        "records": result.records,
        "decided": sum(result.decided.values()),
        "dead_lettered": sum(result.dead_lettered.values()),
        "redelivered": result.redelivered,
        "republished": result.republished,
        "outcomes": sum(result.outcomes.values()),
        "max_latency_ms": round(max(result.latencies_ms, default=0.0), 2),
    }
