"""Synchronous decisions for ``POST /v1/decide``: same processor, same ledger.

Concurrent requests are coalesced: whatever arrived while a batch was being decided is
decided next as one batch (batches are the unit, a lone request is a batch of one).
Each request's event gets an ``InRecord`` whose topic is ``http:events.<type>`` and
whose offset is unique and increasing in this process; only validated events are passed
in, so the processor never writes a dead letter for an HTTP request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Protocol

from app.errors import TransientError
from app.inference.scoring import Scorer
from app.values import BatchResult, InRecord

MAX_BATCH = 64


class Offsets:
    """Unique, increasing offsets for HTTP records: nanoseconds since the epoch, bumped
    past the last one handed out."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(time.time_ns(), self._last + 1)
        return self._last

    @staticmethod
    def now_ms() -> int:
        return time.time_ns() // 1_000_000


class Processor(Protocol):
    """What the API needs of the batch processor (``app.pipeline.processor``)."""

    @property
    def scorer(self) -> Scorer: ...
    async def process(self, records: Sequence[InRecord]) -> BatchResult: ...


class Decider:
    """Feeds HTTP records to ``processor.process`` in coalesced batches."""

    def __init__(self, processor: Processor, *, max_batch: int = MAX_BATCH) -> None:
        self._processor = processor
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[InRecord, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.offsets = Offsets()

    async def decide(self, record: InRecord) -> None:
        """Return once ``record``'s decision is stored and published (or raise why not)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="arbiter-http-decide")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((record, done))
        await done

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            _, done = self._queue.get_nowait()
            if not done.done():
                done.set_exception(TransientError("the API is shutting down; retry elsewhere"))

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [(r, d) for r, d in batch if not d.done()]  # callers that gave up
            if batch:
                await self._process(batch)

    async def _process(self, batch: Sequence[tuple[InRecord, asyncio.Future[None]]]) -> None:
        try:
            await self._processor.process([r for r, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or isinstance(exc, TransientError):
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                return
            # One bad event must not fail the others that happened to share its batch.
            for item in batch:
                await self._process([item])
            return
        for _, done in batch:
            if not done.done():
                done.set_result(None)
