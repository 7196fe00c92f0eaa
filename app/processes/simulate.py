"""``arbiter simulate`` (and the demo's stream): simulator events and outcomes produced to
any Kafka at a target rate.

Sends are pipelined (the producer batches them) and paced per chunk, so a rate of tens
of thousands per second is reachable while a low rate still trickles evenly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaProducer

from app.simulator.generate import SimEvent
from app.values import OutMessage
from connectors.kafka.client import make_producer, publish_all


async def emit(
    bootstrap: str,
    events: Iterable[SimEvent],
    *,
    topic_for: Callable[[str], str],
    rate: float = 0.0,
    chunk: int = 200,
    on_sent: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
    outcome_topic_for: Callable[[str], str] | None = None,
) -> int:
    """Send each event to ``topic_for(type)`` and each outcome to ``outcome_topic_for(type)``.

    ``rate`` (messages per second, outcomes included; 0 means as fast as possible) paces
    everything sent. ``on_sent`` gets the number of *events* in each sent chunk, so a
    progress display counts against the events asked for; the return value counts every
    message sent, outcomes included.
    """
    producer = make_producer(bootstrap)
    await producer.start()
    sent = 0
    started = time.monotonic()
    pending: list[OutMessage] = []
    pending_events = 0
    step = chunk if rate <= 0 else max(1, min(chunk, int(rate / 20) or 1))
    try:
        for event in events:
            if stop is not None and stop.is_set():
                break
            if event.kind == "outcomes":
                topic = _outcome_topic(outcome_topic_for, event)
            else:
                topic = topic_for(event.event_type)
                pending_events += 1
            pending.append(OutMessage(topic, event.key, event.value))
            if len(pending) >= step:
                sent += await _flush(producer, pending, pending_events, on_sent)
                pending_events = 0
                if rate > 0:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        sent += await _flush(producer, pending, pending_events, on_sent)
    finally:
        await producer.stop()
    return sent


def _outcome_topic(outcome_topic_for: Callable[[str], str] | None, event: SimEvent) -> str:
    if outcome_topic_for is None:
        raise ValueError(
            f"the stream holds an outcome (of {event.event_type} {event.event_id}) but emit "
            "was given no outcome_topic_for: pass outcome_topic_for=lambda t: "
            'settings.topic("outcomes", t), or generate without outcomes=True'
        )
    return outcome_topic_for(event.event_type)


async def _flush(
    producer: AIOKafkaProducer,
    pending: list[OutMessage],
    events: int,
    on_sent: Callable[[int], None] | None,
) -> int:
    if not pending:
        return 0
    batch = list(pending)
    pending.clear()
    await publish_all(producer, batch)
    if on_sent:
        on_sent(events)
    return len(batch)
