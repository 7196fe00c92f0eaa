"""The consume loop: fetch a batch → process → commit offsets per partition, until stopped.

On a failed batch it rewinds each partition to the batch's first offset and retries after
a backoff, so nothing is skipped; after repeated failures it decides the batch one record
at a time so that one poison event is dead-lettered instead of stalling its partition. A
shutdown request is honoured between batches: the batch in hand is committed and the
group is left at once.

Why aiokafka directly and not a FastStream subscriber: offsets must be committed per
partition, explicitly, only after the batch is stored and published, and a failed batch
must be rewound (see docs/dependencies.md, FastStream).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError

from app.errors import TransientError
from app.metrics import CONSUME_TO_COMMIT, LagReporter
from app.values import BatchResult, InRecord
from connectors.kafka.client import make_consumer

log = structlog.get_logger("arbiter.consume")

BatchListener = Callable[[BatchResult], None]


class Processor(Protocol):
    """What the loop needs of the batch processor (``app.pipeline.processor``)."""

    async def process(self, records: Sequence[InRecord]) -> BatchResult: ...
    async def quarantine(self, record: InRecord, error: BaseException) -> BatchResult: ...


@dataclass(frozen=True)
class ConsumeConfig:
    """Where and how to consume: ``topics`` maps each topic to (kind, event type)."""

    bootstrap: str
    topics: Mapping[str, tuple[str, str]]
    group_id: str
    batch_max: int
    batch_wait_ms: int
    session_timeout_ms: int
    heartbeat_interval_ms: int


class ConsumeLoop:
    """fetch → process → commit, until ``stop()``; failures rewind and retry."""

    def __init__(
        self,
        processor: Processor,
        config: ConsumeConfig,
        *,
        between_batches: Callable[[], Awaitable[None]] | None = None,
        log_fields: Callable[[], Mapping[str, object]] = dict,
        listeners: Sequence[BatchListener] = (),
        max_backoff_s: float = 10.0,
        isolate_after: int = 3,
    ) -> None:
        self._processor = processor
        self._config = config
        self._between_batches = between_batches
        self._log_fields = log_fields
        self._listeners = list(listeners)
        self._stopping = asyncio.Event()
        self._max_backoff_s = max_backoff_s
        self._isolate_after = isolate_after
        self.batches = 0
        self.failed_batches = 0
        self.ready = asyncio.Event()
        self._lag = LagReporter(interval_s=1.0)
        self._positions: dict[TopicPartition, int] = {}  # next offset to read, per partition

    def stop(self) -> None:
        self._stopping.set()

    def _consumer(self) -> AIOKafkaConsumer:
        c = self._config
        return make_consumer(
            c.bootstrap,
            list(c.topics),
            group_id=c.group_id,
            max_records=c.batch_max,
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=c.heartbeat_interval_ms,
        )

    async def run(self) -> None:
        c = self._config
        consumer = self._consumer()
        await consumer.start()
        self.ready.set()
        failures = 0
        try:
            while not self._stopping.is_set():
                if self._between_batches is not None:
                    await self._between_batches()
                fetched = await consumer.getmany(
                    timeout_ms=max(c.batch_wait_ms, 100), max_records=c.batch_max
                )
                if not fetched:
                    self._lag.update(consumer, self._positions)
                    continue
                fetched_at = time.perf_counter()
                records = [
                    InRecord(
                        event_type=c.topics[tp.topic][1],
                        kind=c.topics[tp.topic][0],
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
                        result = await self._processor.process(records)
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
                    **result.summary(),
                    took_ms=round((time.perf_counter() - started) * 1000, 2),
                    partitions=len(fetched),
                    **self._log_fields(),
                )
                for listener in self._listeners:
                    listener(result)
        finally:
            await consumer.stop()  # leaves the group so partitions move at once

    async def _isolate(self, records: Sequence[InRecord]) -> BatchResult:
        """After repeated failures, decide the batch one record at a time so that one poison
        event is dead-lettered (reason ``processing_error``) instead of stalling its
        partition. A transient error still fails the whole batch: it will be retried."""
        merged = BatchResult(records=len(records))
        for record in records:
            try:
                part = await self._processor.process([record])
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
                part = await self._processor.quarantine(record, exc)
            merged.merge(part)
        return merged

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:
            # A rebalance took these partitions away mid-batch. Their decisions are stored
            # and published; the new owner will find them in the ledger and skip them.
            log.warning("commit refused after rebalance; new owner will skip", error=str(exc))
