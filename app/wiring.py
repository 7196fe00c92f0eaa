"""The composition root: everything a process needs, built from ``Settings`` and checked.

``start_components`` checks every dependency at start-up (database reachable and
migrated, rules valid, models loadable, broker reachable, topics present), so a
misconfiguration is refused before the first event, and tears it all down in reverse
order on exit. ``consume_loop`` puts the Kafka consume loop around the processor, with
the rules and models upkeep between batches. The processes (``app.processes``) and the
tests build their services through here; nothing else reads ``Settings`` to wire things.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from app.declarations import EventTypes, limits_of, served_by
from app.declarations.reload import DeclarationsWatcher
from app.errors import ConfigError
from app.inference.scoring import Scorer
from app.outbox.config import Endpoints, check_rule_webhooks, load_endpoints
from app.pipeline.models import ModelWatcher, load_in_service, replay_history
from app.pipeline.processor import BatchProcessor
from app.pipeline.upkeep import Upkeep, publish_topics
from app.rules.loader import load_rulesets
from app.rules.reload import RulesWatcher, fields_read, rules_check, vocabulary
from app.rules.runtime.engine import RulesEngine
from app.settings import Settings
from app.store import migrate
from app.store.db import check_connection, create_engine
from app.store.ledger import Ledger
from app.store.outcomes import OutcomeStore
from app.store.registry import ModelRegistry
from app.trainer.bootstrap import ensure_champions
from app.values import OutMessage
from connectors.broker import EmbeddedBroker
from connectors.kafka.client import ensure_topics, make_producer, publish_all
from connectors.kafka.consume import BatchListener, ConsumeConfig, ConsumeLoop

log = structlog.get_logger("arbiter.wiring")


def all_topics(settings: Settings) -> list[str]:
    kinds = ("events", "decisions", "outcomes", "dlq")
    return [settings.topic(k, t) for t in settings.event_types for k in kinds]  # type: ignore[arg-type]


def event_types(settings: Settings) -> EventTypes:
    """The event types this process serves, from their declarations (``ConfigError``
    naming every problem when one is broken or missing)."""
    return served_by(settings)


def rule_vocabulary(
    settings: Settings, types: EventTypes | None = None
) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """The fields and scores rule files may name, for the event types this process runs."""
    return vocabulary(types or event_types(settings))


def load_rules_engine(settings: Settings, types: EventTypes | None = None) -> RulesEngine:
    return RulesEngine(load_rulesets(settings.rules.dir, *rule_vocabulary(settings, types)))


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
    # The served event types and their decoders; the consume loop replaces it when their
    # declarations change (the HTTP routes read it per request).
    types: EventTypes


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
        if settings.database.auto_migrate:
            say("applying database migrations")
            await migrate.upgrade(url)
        await migrate.require_current(engine)

        types = event_types(settings)
        say(f"serving {', '.join(types.names)} (declared in {settings.schemas.dir})")
        say(f"loading rules from {settings.rules.dir}")
        rules = load_rules_engine(settings, types)
        endpoints = load_endpoints(settings.connectors_file, os.environ)
        for name in check_rule_webhooks(rules.rulesets, endpoints):
            log.warning("rules name a disabled webhook endpoint", endpoint=name)

        bootstrap = settings.kafka.bootstrap
        if not bootstrap:
            broker = EmbeddedBroker(log_file=settings.data_dir / "broker.log").start()
            stack.callback(broker.stop)
            bootstrap = broker.bootstrap
            say(f"embedded broker (Tansu) listening on {bootstrap}")
        created = await ensure_topics(
            bootstrap,
            [*all_topics(settings), *publish_topics(rules.rulesets)],
            settings.kafka.topic_partitions,
        )
        if created:
            say(f"created {len(created)} topics")

        say("loading models")
        registry = ModelRegistry(engine)
        models_dir = settings.resolved_models_dir
        await ensure_champions(registry, models_dir, types.catalog(), on_progress=say)
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
            ledger,
            scorer,
            lookback=timedelta(hours=settings.models.history_replay_h),
            event_models=types.models,
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
            text_threads=settings.models.text_threads,
            outcomes=outcome_store,
            endpoints=endpoints,
            types=types,
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
            types,
        )


def consume_loop(
    components: Components,
    *,
    listeners: Sequence[BatchListener] = (),
    max_backoff_s: float = 10.0,
    isolate_after: int = 3,
) -> ConsumeLoop:
    """The consume loop of ``events.<type>`` and ``outcomes.<type>`` around the processor,
    with declarations and rules hot reload and model swaps between batches."""
    s = components.settings

    def serve_types(types: EventTypes) -> None:
        components.types = types

    upkeep = Upkeep(
        components.processor,
        components.rules,
        RulesWatcher(
            s.rules.dir, *rule_vocabulary(s, components.types), interval_s=s.rules.reload_s
        ),
        ModelWatcher(
            components.registry,
            s.resolved_models_dir,
            components.processor.scorer,
            interval_s=s.models.poll_s,
        ),
        endpoints=components.endpoints,
        ensure_topics=lambda topics: ensure_topics(
            components.bootstrap, topics, s.kafka.topic_partitions
        ),
        rules_dir=s.rules.dir,
        models_poll_s=s.models.poll_s,
        declarations=DeclarationsWatcher(
            s.schemas.dir,
            components.types,
            limits=limits_of(s),
            interval_s=s.schemas.reload_s,
            rule_fields=lambda: fields_read(components.rules.rulesets),
            rules_check=rules_check(s.rules.dir),
        ),
        on_types=serve_types,
    )
    config = ConsumeConfig(
        bootstrap=components.bootstrap,
        topics={
            s.topic(kind, t): (kind, t) for t in s.event_types for kind in ("events", "outcomes")
        },
        group_id=s.kafka.consumer_group,
        batch_max=s.batch.max,
        batch_wait_ms=s.batch.wait_ms,
        session_timeout_ms=s.kafka.session_timeout_ms,
        heartbeat_interval_ms=s.kafka.heartbeat_interval_ms,
    )
    return ConsumeLoop(
        components.processor,
        config,
        between_batches=upkeep.between_batches,
        log_fields=lambda: upkeep.serving,
        listeners=listeners,
        max_backoff_s=max_backoff_s,
        isolate_after=isolate_after,
    )
