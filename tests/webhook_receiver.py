"""A real HTTP webhook receiver for tests: a ThreadingHTTPServer on a free loopback port.

It records every request (path, headers, body), answers from a per-path script of
responses (200 when the script is empty), and can hold requests unanswered until
released, to stand in for a slow receiver while a relay is killed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def key(self) -> str:
        return self.headers["idempotency-key"]


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    script: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/{path}"

    def answer(self, path: str, *responses: int | tuple[int, dict[str, str]]) -> None:
        """Queue the next answers for ``path``, or for one Idempotency-Key (then: 200)."""
        self.script.setdefault(path, []).extend(
            r if isinstance(r, tuple) else (r, {}) for r in responses
        )

    def on(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def keys(self) -> set[str]:
        with self.lock:
            return {r.key for r in self.requests}


def serve() -> Iterator[Receiver]:
    """Start a receiver (generator for a pytest fixture); requests are answered at once."""
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            path = self.path.lstrip("/")
            with receiver.lock:
                receiver.requests.append(
                    Received(path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                # A script for this Idempotency-Key wins over the path's.
                queued = receiver.script.get(self.headers.get("Idempotency-Key", "")) or (
                    receiver.script.get(path)
                )
                status, headers = queued.pop(0) if queued else (200, {})
            receiver.released.wait(30)
            payload = b"ok" if status < 300 else b"nope"
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                return  # the sender is gone (a killed relay): nothing to answer

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = Receiver(server)
    receiver.released.set()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.released.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
