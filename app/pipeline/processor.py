"""The batch processor: the I/O shell of the hot path around the pure core (``app.core``).

For one consumed batch it decodes, drops what the ledger has already decided, has the
core decide the rest on the decide worker thread (one ``predict_proba`` per model, one
rules pass per type), stores decisions and dead letters in one transaction (with the
webhook deliveries they owe: the outbox), publishes them in the order the core gives,
and marks them published. Offsets are committed by the caller only after ``process``
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

import structlog

from app.core.decide import Decided, decide_batch
from app.core.publish import dead_letter_message, decision_messages, owed_messages
from app.core.records import dead_letter_record, decision_from_record, decision_record
from app.core.stages import (
    Rejected,
    Valid,
    decode_batch,
    decode_outcomes,
    first_of_each_event,
    guess_event_id,
    utcnow,
)
from app.declarations import EventTypes
from app.errors import InvalidEvent
from app.inference.scoring import Scorer
from app.metrics import OUTCOMES, observe_batch
from app.outbox.config import Endpoints
from app.outbox.plan import plan_batch
from app.pipeline.windows import Correlator, window_specs
from app.rules.language.spec import RuleSet
from app.rules.runtime.engine import RulesEngine
from app.store.ledger import Ledger
from app.store.outcomes import OutcomeStore
from app.values import (
    BatchResult,
    InRecord,
    OutMessage,
    RecordOutcome,
    StoredDecision,
)
from schemas import Decision, EventCore, Outcome

log = structlog.get_logger("arbiter.processor")

Publish = Callable[[Sequence[OutMessage]], Awaitable[None]]
Position = tuple[str, int, int]


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
        types: EventTypes,
    ) -> None:
        self._ledger = ledger
        # The served types: their decoders, labels and declared models.
        self.types = types
        self._event_models: Mapping[str, type[EventCore]] = types.models
        self._declared_labels = types.labels()
        self._declared_models = types.declared_models()
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

    async def set_types(self, types: EventTypes) -> None:
        """Put changed declarations of the served types in service between batches (the
        declarations watcher has checked them against the rules and models in service):
        the next batch decodes, checks labels and names untrained models by them."""
        async with self._busy:
            self.types = types
            self._event_models = types.models
            self._declared_labels = types.labels()
            self._declared_models = types.declared_models()

    def close(self) -> None:
        self._worker.shutdown(wait=True)
        self._text_worker.shutdown(wait=True)

    def _decide(self, fresh: Sequence[Valid], received_at: datetime) -> list[Decided]:
        """The pure core's whole-batch decision, on the decide worker."""
        return decide_batch(
            fresh,
            scorer=self.scorer,  # one scorer for the whole batch, even if a swap is pending
            rules=self._rules,
            windows=self._windows,
            decisions_topic=lambda t: self._topic_for("decisions", t),
            received_at=received_at,
            text_pool=self._text_worker,
            declared_models=self._declared_models,
        )

    def decision_messages(self, decision: Decision) -> list[OutMessage]:
        """The decision on ``decisions.<type>`` and on every topic a ``publish`` action names."""
        return decision_messages(decision, self._topic_for)

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
        await self._publish([dead_letter_message(rejected, self._topic_for)])
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
        outcomes, rejected = decode_outcomes(
            records, max_bytes=self._max_event_bytes, labels=self._declared_labels
        )
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
        valid, rejected = decode_batch(
            records, max_bytes=self._max_event_bytes, models=self._event_models
        )
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

        decided: list[Decided] = []
        if fresh:
            loop = asyncio.get_running_loop()
            decided = await loop.run_in_executor(self._worker, self._decide, fresh, received_at)

        positions: list[Position] = [
            (r.record.topic, r.record.partition, r.record.offset) for r in rejected
        ]
        dl_published = await self._ledger.find_dead_letters(positions) if positions else {}
        now = utcnow()
        outcome = await self._ledger.record(
            [decision_record(d.decision, d.item, d.shadow_scores) for d in decided],
            [
                dead_letter_record(r, now)
                for r in rejected
                if (r.record.topic, r.record.partition, r.record.offset) not in dl_published
            ],
            deliveries=plan_batch((d.decision for d in decided), self._endpoints, now),
        )

        to_publish, published_ids = await self._owed(first, decided, outcome, stored, result, now)
        dl_positions: list[Position] = []
        for r in rejected:
            pos = (r.record.topic, r.record.partition, r.record.offset)
            if dl_published.get(pos):
                continue
            to_publish.append(dead_letter_message(r, self._topic_for))
            dl_positions.append(pos)
            if pos not in dl_published:
                result.dead_lettered[(r.record.event_type, r.error.reason)] += 1
                _log_dead_letter(r)
        observe_batch(
            result,
            [d.decision for d in decided if d.decision.event_id in outcome.inserted_event_ids],
            at=utcnow(),
        )
        await self._publish(to_publish)
        if published_ids or dl_positions:
            await self._ledger.mark_published(published_ids, dl_positions, utcnow())
        return result

    async def _owed(
        self,
        first: Sequence[Valid],
        decided: Sequence[Decided],
        outcome: RecordOutcome,
        stored: Mapping[str, StoredDecision],
        result: BatchResult,
        now: datetime,
    ) -> tuple[list[OutMessage], list[str]]:
        """The decision messages to publish (in record order) and the event ids they mark
        published: new decisions, ones a racing consumer stored first (loaded from the
        ledger: theirs is the one that counts) and stored ones nobody published."""
        owed: dict[str, Decision] = {}
        raced: list[str] = []
        for d in decided:
            decision = d.decision
            if decision.event_id in outcome.inserted_event_ids:
                owed[decision.event_id] = decision
                result.decided[(decision.event_type, decision.decision)] += 1
                result.latencies_ms.append(decision.latency_ms)
                result.e2e_ms.append(
                    max(now.timestamp() * 1000.0 - d.item.record.timestamp_ms, 0.0)
                )
            else:
                raced.append(decision.event_id)
                result.redelivered += 1  # another consumer stored it first: publish theirs
                result.redelivered_types[decision.event_type] += 1
        found = await self._ledger.find_decisions(raced) if raced else {}
        for event_id, prior in found.items():
            owed[event_id] = decision_from_record(prior.record)
        for event_id, prior in stored.items():
            if not prior.published:
                owed[event_id] = decision_from_record(prior.record)
                result.republished += 1
        return owed_messages(first, owed, self._topic_for)
