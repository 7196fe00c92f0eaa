"""The trainer's worker process never outlives the trainer that spawned it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.harness import alive, wait_for

# A stand-in trainer: spawns a child the way the trainer does (multiprocessing "spawn"),
# the child arms the watch and then would work for a minute; the parent waits for it.
PARENT = textwrap.dedent(
    """
    import multiprocessing, os, sys, time
    from pathlib import Path

    def work(pid_file):
        from app.trainer.child import exit_with_parent
        exit_with_parent()
        Path(pid_file).write_text(str(os.getpid()))
        time.sleep(60)

    if __name__ == "__main__":
        ctx = multiprocessing.get_context("spawn")
        child = ctx.Process(target=work, args=(sys.argv[1],))
        child.start()
        child.join()
    """
)


def test_a_training_child_ends_at_once_when_its_trainer_is_killed(tmp_path: Path) -> None:
    """SIGKILL to the trainer (no clean-up runs in it): its training child notices the
    parent is gone and exits within seconds instead of training on for nobody."""
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [sys.executable, str(script), str(pid_file)], cwd=Path(__file__).parent.parent
    )
    try:
        wait_for(pid_file.exists, 60, "the training child to start")
        child = int(pid_file.read_text())
        assert alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        killed_at = time.monotonic()
        wait_for(lambda: not alive(child), 10, "the orphaned child to exit")
        assert time.monotonic() - killed_at < 10
    finally:
        if parent.poll() is None:
            parent.kill()
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
