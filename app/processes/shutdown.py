"""The clock of one shutdown, shared by ``arbiter run`` and ``arbiter trainer``.

``Shutdown.begin`` fixes the deadline (``ARBITER_SHUTDOWN_GRACE_S`` from the first
signal); ``finish`` waits for tasks until a point before it and cuts off (cancels) the
ones still running, each named in the log; a watchdog thread ends the process with
status 3 (``EXIT_GRACE_OVERRUN``) ``FORCE_EXIT_AFTER_S`` after the grace should even the
teardown hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

log = structlog.get_logger("arbiter.run")

EXIT_GRACE_OVERRUN = 3  # the exit status when something had to be cut off at the grace
CUT_OFF_WAIT_S = 1.0  # how long a task cut off (cancelled) gets to unwind
FORCE_EXIT_AFTER_S = 3.0  # after the grace: the teardown's time before the watchdog acts
HTTP_MIN_S = 0.5  # the HTTP API's stop always gets at least this long


class Shutdown:
    """The clock of one shutdown. ``begin`` (idempotent) fixes the deadline, runs
    ``on_begin`` and arms a watchdog thread; ``finish`` waits for tasks until a point
    before the deadline and cuts off (cancels) the ones still running."""

    def __init__(self, grace_s: float, on_begin: Callable[[], None] = lambda: None) -> None:
        self.grace_s = grace_s
        self.begun = asyncio.Event()
        self.cut_off: list[str] = []  # names of the tasks that overran, in order
        self.waiting_on = ""  # what the watchdog names if it has to end the process
        self._on_begin = on_begin
        self._deadline: float | None = None
        self._watchdog: threading.Timer | None = None

    def begin(self) -> None:
        if self._deadline is not None:
            return
        self._deadline = time.monotonic() + self.grace_s
        self._watchdog = threading.Timer(self.grace_s + FORCE_EXIT_AFTER_S, self._force_exit)
        self._watchdog.daemon = True
        self._watchdog.start()
        self.begun.set()
        self._on_begin()

    @property
    def overran(self) -> bool:
        return bool(self.cut_off)

    def left(self, keep: float = 0.0) -> float:
        """Seconds until ``keep`` seconds before the deadline (0 when past it)."""
        if self._deadline is None:
            raise RuntimeError("the shutdown has not begun")
        return max(0.0, self._deadline - keep - time.monotonic())

    async def finish(
        self, tasks: Sequence[asyncio.Task[Any]], *, keep: float = 0.0, at_least: float = 0.0
    ) -> None:
        """Wait for ``tasks`` until ``keep`` seconds before the deadline (but ``at_least``
        this long); cut off the ones still running, each named in the log, and give them
        ``CUT_OFF_WAIT_S`` to unwind."""
        running = [t for t in tasks if not t.done()]
        if not running:
            return
        self.waiting_on = ", ".join(t.get_name() for t in running)
        _, late = await asyncio.wait(running, timeout=max(self.left(keep), at_least))
        for task in sorted(late, key=lambda t: t.get_name()):
            self.cut_off.append(task.get_name())
            log.error(
                "did not stop within the shutdown grace period; cutting it off",
                task=task.get_name(),
                grace_s=self.grace_s,
            )
            task.cancel()
        if late:
            _, stuck = await asyncio.wait(late, timeout=CUT_OFF_WAIT_S)
            for task in stuck:
                log.error("still running after being cut off; leaving it", task=task.get_name())

    def disarm(self) -> None:
        """Everything stopped in time: the watchdog is not needed (an overrun keeps it
        armed: the process is ending, and it guards the last steps)."""
        if self._watchdog is not None and not self.overran:
            self._watchdog.cancel()

    def _force_exit(self) -> None:
        log.error(
            "shutdown did not finish within the grace period; ending the process",
            grace_s=self.grace_s,
            waiting_on=self.waiting_on or "teardown",
            status=EXIT_GRACE_OVERRUN,
        )
        with contextlib.suppress(Exception):
            sys.stderr.flush()
            sys.stdout.flush()
        os._exit(EXIT_GRACE_OVERRUN)
