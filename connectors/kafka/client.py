"""Kafka plumbing on aiokafka: topic creation, the consumer and producer we trust, publishing.

Why aiokafka directly and not a FastStream subscriber on the hot path: Arbiter's
exactly-once story needs (1) offsets committed per partition, explicitly, only after the
batch is stored and published, and (2) on a failed batch, a seek back to the committed
offsets so nothing is skipped. FastStream 0.7's batch subscriber can do neither without
reaching into its internals (``msg.ack()`` commits every consumed position; a failing
handler under the default policy auto-commits; docs/dependencies.md, FastStream). FastStream
is used where it is safe (the naive benchmark baseline, the AsyncAPI document).

Tansu quirks handled here (docs/dependencies.md, Kafka): no idempotent producer
(``InitProducerId`` fails), and ``latest`` offsets are wrong, so new groups start from
``earliest``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from app.errors import ConfigError, TransientError
from app.values import OutMessage

Header = tuple[str, bytes]


async def ensure_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> list[str]:
    """Create the missing topics and return their names; refuse clearly if Kafka is unreachable."""
    if not topics:
        return []
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
    except KafkaError as exc:
        raise ConfigError(
            f"cannot reach Kafka at {bootstrap} ({exc.__class__.__name__}): start the broker "
            "or fix ARBITER_KAFKA_BOOTSTRAP (unset it to run the embedded broker)."
        ) from exc
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if not missing:
            return []
        # Another process may win the race; the topic is there, which is all we need.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [NewTopic(name=t, num_partitions=partitions, replication_factor=1) for t in missing]
            )
        return missing
    finally:
        await admin.close()


def make_consumer(
    bootstrap: str,
    topics: Sequence[str],
    *,
    group_id: str,
    max_records: int,
    session_timeout_ms: int = 10_000,
    heartbeat_interval_ms: int = 1_000,
) -> AIOKafkaConsumer:
    """A group consumer that never commits on its own."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_records,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        # Range assignment gives one member the same partition numbers of every events
        # topic: a customer's orders, tickets and transactions (same key, same partition
        # number) meet in one process, which correlation windows rely on.
        partition_assignment_strategy=(RangePartitionAssignor,),
    )


def make_producer(bootstrap: str, *, linger_ms: int = 5) -> AIOKafkaProducer:
    """A pipelining producer, acks from all in-sync replicas (Tansu can't do idempotence)."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=linger_ms,
        enable_idempotence=False,
        max_request_size=4 * 1024 * 1024,
        max_batch_size=256 * 1024,
    )


async def publish_all(producer: AIOKafkaProducer, messages: Sequence[OutMessage]) -> None:
    """Send every message pipelined and wait for every acknowledgement.

    All-or-error: if any send fails the caller gets a ``TransientError`` and must treat
    the whole batch as unpublished (re-publishing is safe, consumers dedupe on event_id).
    """
    if not messages:
        return
    try:
        futures = [
            await producer.send(m.topic, m.value, key=m.key, headers=list(m.headers) or None)
            for m in messages
        ]
        await asyncio.gather(*futures)
    except KafkaError as exc:
        raise TransientError(
            f"publishing {len(messages)} records failed ({exc.__class__.__name__}: {exc}); "
            "the batch will be retried — check the broker is reachable and the topics exist."
        ) from exc
