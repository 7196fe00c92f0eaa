"""What every ``arbiter`` sub-command shares: settings, the error line, the consoles.

Each command module (``service``, ``rules``, ``db``, ``schemas``, ``models``, ``keys``,
``deliveries``, ``trainer``, ``importer``) imports this module and no other command module;
``app.cli.main`` puts them together. Start-up problems (``ConfigError``, invalid
settings) print one ``error:`` line naming the thing and the fix and exit with status 2;
nothing prints a traceback at a user for a configuration mistake.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import structlog
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from app.errors import ConfigError
from app.logs import configure_logging
from app.settings import Settings, legacy_names_in

console = Console()
err = Console(stderr=True)
T = TypeVar("T")


def build_settings(**overrides: Any) -> Settings:
    """The settings from the environment with the options given (None = not given), and
    logging configured from them; invalid settings end the command with one line."""
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"ARBITER_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        fail(f"invalid settings: {problems}")
    configure_logging(settings.log.format, settings.log.level)
    for old, new in legacy_names_in(os.environ):
        structlog.get_logger("arbiter.settings").warning(
            "a setting uses its old name; it still works, rename it", old=old, new=new
        )
    return settings


def fail(message: str) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with status 2."""
    err.print("[bold red]error:[/]", escape(message), highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine ``make()`` returns; a ``ConfigError`` ends the command with one line."""
    try:
        return asyncio.run(make())
    except ConfigError as exc:
        fail(str(exc))


def parse_when(value: str, option: str) -> datetime:
    """``value`` of ``option`` as an ISO date/time (UTC when it has no offset)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(
            f"{option} {value!r} is not an ISO date/time — write e.g. 2026-03-01 or "
            "2026-03-01T12:00:00Z"
        )
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
