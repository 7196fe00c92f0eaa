"""The background trainer's worker process: bounded CPU, a log line per phase.

Kept import-light on purpose: a spawned child imports this module first, and the thread
limits must be in the environment before numpy, scikit-learn or torch load.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import traceback
from multiprocessing.connection import wait
from typing import Any

EXIT_ORPHANED = 70  # the status a child ends with when its parent is gone


def exit_with_parent() -> None:
    """End this process as soon as the process that spawned it is gone.

    A trainer killed outright (SIGKILL, a lost pod) must not leave its child training on:
    the child would go on using CPU and write a version folder that nobody registers."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def init(threads: int, niceness: int, log_format: str, log_level: str) -> None:
    """Process initializer: lower priority, cap native threads, configure logging."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ["HF_HUB_OFFLINE"] = "1"
    if niceness > 0 and hasattr(os, "nice"):
        os.nice(niceness)  # the consumer keeps priority over training
    from app.logs import configure_logging

    configure_logging(log_format, log_level)  # type: ignore[arg-type]


def run(job: Any, threads: int) -> Any:
    """Run one ``TrainJob`` here; every phase is logged (the caller sees the result)."""
    import structlog

    from app.trainer.jobs.job import run_job

    if job.text_group:  # torch only where the encoder is needed
        from app.inference.encoder import configure_threads

        configure_threads(threads)
    log = structlog.get_logger("arbiter.trainer")
    crash_at = os.environ.get("ARBITER_TRAINER_CRASH_AT", "")

    def phase(message: str) -> None:
        log.info("training", target=job.target, step=message)
        if crash_at and crash_at in message:
            # Fault injection for the crash-safety test: die like a killed process would.
            os._exit(17)

    return run_job(job, phase)


def main(job: Any, threads: int, niceness: int, log_format: str, log_level: str, conn: Any) -> None:
    """The child process's entry: run the job, send back ("ok", results) or ("error", text)."""
    try:
        exit_with_parent()
        init(threads, niceness, log_format, log_level)
        conn.send(("ok", run(job, threads)))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"))
    finally:
        conn.close()
