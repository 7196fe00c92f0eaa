"""The composition root and the consume loop of ``arbiter run``.

``start_components`` builds everything from ``Settings`` and checks it at start-up
(database reachable and migrated, rules valid, models loadable, broker reachable,
topics present), so a misconfiguration is refused before the first event.
``ConsumeLoop`` then repeats: fetch a batch → process → commit offsets per partition.
On a failed batch it rewinds each partition to the batch's first offset and retries
after a backoff, so nothing is skipped; a shutdown request is honoured between batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from app.errors import ConfigError, TransientError
from app.inference.catalog import SCORE_TYPES
from app.inference.scoring import Scorer
from app.metrics import CONSUME_TO_COMMIT, RULES_RELOADS, LagReporter, set_versions_in_service
from app.outbox.config import Endpoints, check_rule_webhooks, load_endpoints
from app.pipeline.models import ModelWatcher, load_in_service, replay_history
from app.pipeline.processor import BatchProcessor, summarise
from app.rules.engine import RulesEngine
from app.rules.loader import load_rulesets
from app.rules.reload import RulesWatcher
from app.rules.spec import Publish, RuleSet
from app.settings import Settings
from app.store import migrate
from app.store.db import check_connection, create_engine
from app.store.ledger import Ledger
from app.store.outcomes import OutcomeStore
from app.store.registry import ModelRegistry
from app.trainer.bootstrap import ensure_champions
from app.values import BatchResult, InRecord, OutMessage
from connectors.broker import EmbeddedBroker
from connectors.kafka import ensure_topics, make_consumer, make_producer, publish_all
from schemas import field_types

log = structlog.get_logger("arbiter.service")

BatchListener = Callable[[BatchResult], None]


def all_topics(settings: Settings) -> list[str]:
    kinds = ("events", "decisions", "outcomes", "dlq")
    return [settings.topic(k, t) for t in settings.event_types for k in kinds]  # type: ignore[arg-type]


def publish_topics(rulesets: Mapping[str, RuleSet]) -> list[str]:
    """Topics that ``publish:`` actions name: created before the rules go into service, so
    a decision is never held up by a topic that does not exist yet."""
    return sorted(
        {
            action.topic
            for ruleset in rulesets.values()
            for rule in ruleset.rules
            for action in rule.actions
            if isinstance(action, Publish)
        }
    )


def rule_vocabulary(
    settings: Settings,
) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """The fields and scores rule files may name, for the event types this process runs."""
    types: dict[str, dict[str, str]] = {t: dict(field_types(t)) for t in settings.event_types}
    scores = {t: SCORE_TYPES[t] for t in settings.event_types}
    return types, scores


def load_rules_engine(settings: Settings) -> RulesEngine:
    return RulesEngine(load_rulesets(settings.rules_dir, *rule_vocabulary(settings)))


@dataclass
class Components:
    settings: Settings
    bootstrap: str
    ledger: Ledger
    processor: BatchProcessor
    producer: AIOKafkaProducer
    scorer: Scorer  # the scorer at start-up; ``processor.scorer`` is the one in service
    rules: RulesEngine
    publish: Callable[[Sequence[OutMessage]], Awaitable[None]]
    registry: ModelRegistry
    outcomes: OutcomeStore
    endpoints: Endpoints  # webhook endpoints (connectors file)


@contextlib.asynccontextmanager
async def start_components(
    settings: Settings, *, on_progress: Callable[[str], None] | None = None
) -> AsyncIterator[Components]:
    """Build and check every dependency; tear down in reverse order on exit."""
    say = on_progress or (lambda msg: log.info("startup", step=msg))
    async with contextlib.AsyncExitStack() as stack:
        url = settings.resolved_database_url
        if url.startswith("sqlite"):
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        stack.push_async_callback(engine.dispose)
        await check_connection(engine, url)
        if settings.auto_migrate:
            say("applying database migrations")
            await migrate.upgrade(url)
        await migrate.require_current(engine)

        say(f"loading rules from {settings.rules_dir}")
        rules = load_rules_engine(settings)
        endpoints = load_endpoints(settings.connectors_file, os.environ)
        for name in check_rule_webhooks(rules.rulesets, endpoints):
            log.warning("rules name a disabled webhook endpoint", endpoint=name)

        bootstrap = settings.kafka_bootstrap
        if not bootstrap:
            broker = EmbeddedBroker(log_file=settings.data_dir / "broker.log").start()
            stack.callback(broker.stop)
            bootstrap = broker.bootstrap
            say(f"embedded broker (Tansu) listening on {bootstrap}")
        created = await ensure_topics(
            bootstrap,
            [*all_topics(settings), *publish_topics(rules.rulesets)],
            settings.topic_partitions,
        )
        if created:
            say(f"created {len(created)} topics")

        say("loading models")
        registry = ModelRegistry(engine)
        models_dir = settings.resolved_models_dir
        await ensure_champions(registry, models_dir, on_progress=say)
        scorer, _ = await load_in_service(registry, models_dir)
        await asyncio.get_running_loop().run_in_executor(None, scorer.warm_up)

        producer = make_producer(bootstrap)
        try:
            await producer.start()
        except KafkaError as exc:
            raise ConfigError(
                f"cannot reach Kafka at {bootstrap} ({exc}): check ARBITER_KAFKA_BOOTSTRAP"
            ) from exc
        stack.push_async_callback(producer.stop)

        async def publish(messages: Sequence[OutMessage]) -> None:
            await publish_all(producer, messages)

        ledger = Ledger(engine)
        outcome_store = OutcomeStore(engine)
        replayed = await replay_history(
            ledger, scorer, lookback=timedelta(hours=settings.history_replay_h)
        )
        if replayed:
            say(f"customer feature history replayed from {replayed:,} decided events")
        processor = BatchProcessor(
            ledger=ledger,
            scorer=scorer,
            rules=rules,
            publish=publish,
            topic_for=settings.topic,  # type: ignore[arg-type]
            max_event_bytes=settings.max_event_bytes,
            text_threads=settings.text_threads,
            outcomes=outcome_store,
            endpoints=endpoints,
        )
        stack.callback(processor.close)
        yield Components(
            settings,
            bootstrap,
            ledger,
            processor,
            producer,
            scorer,
            rules,
            publish,
            registry,
            outcome_store,
            endpoints,
        )


class ConsumeLoop:
    """fetch → process → commit, until ``stop()``; failures rewind and retry."""

    def __init__(
        self,
        components: Components,
        *,
        listeners: Sequence[BatchListener] = (),
        max_backoff_s: float = 10.0,
        isolate_after: int = 3,
    ) -> None:
        self._c = components
        self._settings = components.settings
        self._listeners = list(listeners)
        self._stopping = asyncio.Event()
        self._max_backoff_s = max_backoff_s
        self._isolate_after = isolate_after
        self.batches = 0
        self.failed_batches = 0
        self.ready = asyncio.Event()
        self._lag = LagReporter(interval_s=1.0)
        self._positions: dict[TopicPartition, int] = {}  # next offset to read, per partition
        self._serving: dict[str, object] = {}  # versions in service, for the batch log line
        self._note_serving()
        self._watcher = RulesWatcher(
            self._settings.rules_dir,
            *rule_vocabulary(self._settings),
            interval_s=self._settings.rules_reload_s,
        )
        self._models = ModelWatcher(
            components.registry,
            self._settings.resolved_models_dir,
            components.processor.scorer,
            interval_s=self._settings.models_poll_s,
        )

    def stop(self) -> None:
        self._stopping.set()

    def _consumer(self) -> AIOKafkaConsumer:
        s = self._settings
        topics = [s.topic(k, t) for t in s.event_types for k in ("events", "outcomes")]
        return make_consumer(
            self._c.bootstrap,
            topics,
            group_id=s.consumer_group,
            max_records=s.batch_max,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
        )

    async def run(self) -> None:
        s = self._settings
        type_of = {
            s.topic(kind, t): (kind, t) for t in s.event_types for kind in ("events", "outcomes")
        }
        consumer = self._consumer()
        await consumer.start()
        self.ready.set()
        failures = 0
        try:
            while not self._stopping.is_set():
                await self._maybe_reload_rules()
                await self._maybe_swap_models()
                fetched = await consumer.getmany(
                    timeout_ms=max(s.batch_wait_ms, 100), max_records=s.batch_max
                )
                if not fetched:
                    self._lag.update(consumer, self._positions)
                    continue
                fetched_at = time.perf_counter()
                records = [
                    InRecord(
                        event_type=type_of[tp.topic][1],
                        kind=type_of[tp.topic][0],
                        topic=tp.topic,
                        partition=tp.partition,
                        offset=m.offset,
                        key=m.key,
                        value=m.value if m.value is not None else b"",
                        timestamp_ms=m.timestamp,
                    )
                    for tp, messages in fetched.items()
                    for m in messages
                ]
                started = time.perf_counter()
                try:
                    if failures >= self._isolate_after:
                        result = await self._isolate(records)
                    else:
                        result = await self._c.processor.process(records)
                except Exception as exc:
                    failures += 1
                    self.failed_batches += 1
                    backoff = min(0.2 * 2**failures, self._max_backoff_s)
                    log.error(
                        "batch failed; rewinding and retrying",
                        error=str(exc),
                        error_type=type(exc).__name__,
                        transient=isinstance(exc, TransientError),
                        records=len(records),
                        retry_in_s=backoff,
                        exc_info=not isinstance(exc, TransientError),
                    )
                    for tp, messages in fetched.items():
                        consumer.seek(tp, messages[0].offset)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), backoff)
                    continue
                failures = 0
                offsets = {tp: messages[-1].offset + 1 for tp, messages in fetched.items()}
                await self._commit(consumer, offsets)
                CONSUME_TO_COMMIT.observe(time.perf_counter() - fetched_at)
                self._positions.update(offsets)
                self._lag.update(consumer, self._positions)
                self.batches += 1
                log.info(
                    "batch",
                    **summarise(result),
                    took_ms=round((time.perf_counter() - started) * 1000, 2),
                    partitions=len(fetched),
                    **self._serving,
                )
                for listener in self._listeners:
                    listener(result)
        finally:
            await consumer.stop()  # leaves the group so partitions move at once

    async def _maybe_reload_rules(self) -> None:
        """Between batches: swap in changed rule files, or refuse them and keep serving."""
        change = self._watcher.poll()
        if change is None:
            return
        if change.rulesets is None:
            RULES_RELOADS.labels(result="refused").inc()
            log.error(
                "rules change refused; the rules in service keep serving",
                rules_dir=str(self._settings.rules_dir),
                problems=[str(p) for p in change.problems],
            )
            return
        try:
            check_rule_webhooks(change.rulesets, self._c.endpoints)
        except ConfigError as exc:
            RULES_RELOADS.labels(result="refused").inc()
            log.error(
                "rules change refused; the rules in service keep serving",
                rules_dir=str(self._settings.rules_dir),
                problems=[str(exc)],
            )
            return
        await ensure_topics(
            self._c.bootstrap, publish_topics(change.rulesets), self._settings.topic_partitions
        )
        await self._c.processor.swap_rules(change.rulesets)
        RULES_RELOADS.labels(result="applied").inc()
        self._note_serving()
        log.info(
            "rules reloaded",
            versions={name: rs.version for name, rs in sorted(change.rulesets.items())},
        )

    async def _maybe_swap_models(self) -> None:
        """Between batches: follow promotions, rollbacks and shadows in the registry."""
        if self._settings.models_poll_s <= 0:
            return
        try:
            scorer = await self._models.poll(self._c.processor.scorer)
        except Exception as exc:  # the registry being unreachable must not stop deciding
            log.warning(
                "model registry check failed; the models in service keep serving", error=str(exc)
            )
            return
        if scorer is not None:
            self._c.processor.swap_scorer(scorer)
            self._note_serving()

    def _note_serving(self) -> None:
        """After start-up or a swap: the versions-in-service gauge and the batch line's
        ``models`` (champions), ``shadows`` (when any) and ``rulesets`` fields."""
        in_service = self._c.processor.scorer.in_service()
        set_versions_in_service(in_service)
        serving: dict[str, object] = {
            "models": {name: f"v{champion}" for name, (champion, _) in in_service.items()},
            "rulesets": {name: rs.version for name, rs in sorted(self._c.rules.rulesets.items())},
        }
        shadows = {n: [f"v{v}" for v in sh] for n, (_, sh) in in_service.items() if sh}
        if shadows:
            serving["shadows"] = shadows
        self._serving = serving

    async def _isolate(self, records: Sequence[InRecord]) -> BatchResult:
        """After repeated failures, decide the batch one record at a time so that one poison
        event is dead-lettered (reason ``processing_error``) instead of stalling its
        partition. A transient error still fails the whole batch: it will be retried."""
        processor = self._c.processor
        merged = BatchResult(records=len(records))
        for record in records:
            try:
                part = await processor.process([record])
            except TransientError:
                raise
            except Exception as exc:
                log.error(
                    "poison event dead-lettered",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    error=str(exc),
                    error_type=type(exc).__name__,
                )
                part = await processor.quarantine(record, exc)
            merged.merge(part)
        return merged

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:
            # A rebalance took these partitions away mid-batch. Their decisions are stored
            # and published; the new owner will find them in the ledger and skip them.
            log.warning("commit refused after rebalance; new owner will skip", error=str(exc))
