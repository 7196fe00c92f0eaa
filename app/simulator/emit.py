"""Produces simulator events to any Kafka at a target rate (``arbiter simulate``, the demo).

Sends are pipelined (the producer batches them) and paced per chunk, so a rate of tens
of thousands per second is reachable while a low rate still trickles evenly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaProducer

from app.simulator.generate import SimEvent
from connectors.kafka import OutMessage, make_producer, publish_all


async def emit(
    bootstrap: str,
    events: Iterable[SimEvent],
    *,
    topic_for: Callable[[str], str],
    rate: float = 0.0,
    chunk: int = 200,
    on_sent: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Send every event to its ``events.<type>`` topic; ``rate`` 0 means as fast as possible."""
    producer = make_producer(bootstrap)
    await producer.start()
    sent = 0
    started = time.monotonic()
    pending: list[OutMessage] = []
    step = chunk if rate <= 0 else max(1, min(chunk, int(rate / 20) or 1))
    try:
        for event in events:
            if stop is not None and stop.is_set():
                break
            pending.append(OutMessage(topic_for(event.event_type), event.key, event.value))
            if len(pending) >= step:
                sent += await _flush(producer, pending, on_sent)
                if rate > 0:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        sent += await _flush(producer, pending, on_sent)
    finally:
        await producer.stop()
    return sent


async def _flush(
    producer: AIOKafkaProducer, pending: list[OutMessage], on_sent: Callable[[int], None] | None
) -> int:
    if not pending:
        return 0
    batch = list(pending)
    pending.clear()
    await publish_all(producer, batch)
    if on_sent:
        on_sent(len(batch))
    return len(batch)
