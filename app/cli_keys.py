"""``arbiter keys``: create, list and revoke the HTTP API's keys.

A new key is printed once; only its hash is stored, so a lost key is revoked and
replaced, never recovered. A revoked key stops working in every running ``arbiter run``
within ``ARBITER_HTTP_KEY_CACHE_S`` seconds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.settings import Settings
from app.store.keys import SCOPES, ApiKey, ApiKeyError, KeyStore

keys_app = typer.Typer(no_args_is_help=True, help="API keys of the HTTP API.")
console = Console()
T = TypeVar("T")


def _cli() -> Any:
    from app import cli  # late: cli imports this module to register the commands

    return cli


async def with_keys(settings: Settings, work: Callable[[KeyStore], Awaitable[T]]) -> T:
    """Run ``work`` against the key table of ``settings``' database (migrated to head)."""
    from app.store import migrate
    from app.store.db import check_connection, create_engine

    url = settings.resolved_database_url
    engine = create_engine(url)
    try:
        await check_connection(engine, url)
        await migrate.require_current(engine)
        return await work(KeyStore(engine))
    finally:
        await engine.dispose()


def _run_keys(work: Callable[[KeyStore], Awaitable[T]]) -> T:
    cli = _cli()
    settings = cli._settings()
    try:
        result: T = cli._run(lambda: with_keys(settings, work))
    except ApiKeyError as exc:
        raise cli._fail(str(exc)) from None
    return result


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what uses the key, e.g. checkout-service.")],
    scope: Annotated[
        list[str], typer.Option("--scope", help=f"Repeat for each: {', '.join(SCOPES)}.")
    ],
) -> None:
    """Create a key and print it ONCE (only its hash is stored)."""
    key, plain = _run_keys(lambda store: store.create(name, scope))
    console.print(
        f"created key [bold]{escape(key.name)}[/] ({key.prefix}) with scopes "
        f"{', '.join(sorted(key.scopes))}; it is shown only now — store it in your "
        "secret manager:",
        highlight=False,
    )
    print(plain)  # plain stdout: a script can capture it


@keys_app.command("list")
def keys_list(
    revoked: Annotated[bool, typer.Option(help="Also list revoked keys.")] = False,
) -> None:
    """Every active key (never the key itself): name, prefix, scopes, created, last used."""
    found: list[ApiKey] = _run_keys(lambda store: store.list(include_revoked=revoked))
    if not found:
        console.print("no API keys: create one with `arbiter keys create --name … --scope …`")
        return
    table = Table(title="API keys", title_justify="left")
    for column in ("name", "prefix", "scopes", "created", "last used", "revoked"):
        table.add_column(column)
    for k in found:
        table.add_row(
            escape(k.name),
            k.prefix,
            ", ".join(sorted(k.scopes)),
            k.created_at.isoformat(timespec="seconds"),
            k.last_used_at.isoformat(timespec="seconds") if k.last_used_at else "—",
            k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke the active key called NAME (running services drop it within seconds)."""
    key = _run_keys(lambda store: store.revoke(name))
    if key is None:
        raise _cli()._fail(f"no active key called {name!r}: see `arbiter keys list`")
    console.print(f"revoked key {escape(key.name)} ({key.prefix})", highlight=False)
