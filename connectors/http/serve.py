"""Serve the API with uvicorn inside the caller's event loop (beside the consume loop).

uvicorn's own signal handlers are disabled: the runner owns SIGTERM/SIGINT and sets
``stop``. Port 0 binds a free port, reported through ``on_ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import uvicorn
from fastapi import FastAPI

from app.errors import ConfigError


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # uvicorn installs its SIGINT/SIGTERM handlers here; the runner owns them

    async def serve_or_refuse(self) -> None:
        """``serve``, with uvicorn's ``sys.exit`` on a start-up failure (port in use)
        turned into a ``ConfigError``: a SystemExit escaping a task would stop the loop."""
        config = self.config
        try:
            await self.serve()
        except SystemExit:
            raise ConfigError(
                f"the HTTP API could not listen on {config.host}:{config.port} (see the log "
                "line before): is the port in use? Set ARBITER_HTTP_PORT (0 picks a free one)"
            ) from None


async def serve_http(
    app: FastAPI,
    host: str,
    port: int,
    *,
    stop: asyncio.Event,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` until ``stop`` is set, then finish in-flight requests
    (uvicorn's graceful shutdown) and return."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # structlog owns logging; uvicorn's loggers propagate to it
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve_or_refuse(), name="arbiter-http")
    while not server.started:
        if serving.done():
            serving.result()  # re-raise why it could not start
            raise ConfigError(f"the HTTP API stopped while starting on {host}:{port}")
        await asyncio.sleep(0.01)
    if on_ready is not None:
        sockets = [s for server_ in server.servers for s in server_.sockets]
        on_ready(int(sockets[0].getsockname()[1]))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stopping.cancel()
        await serving
