"""``arbiter deliveries …``: the webhook outbox as a table, and replay of dead letters.

Thin: each command builds settings, calls one function of ``app.ops.deliveries`` and
prints what it returns with rich.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from app.cli.options import build_settings, console, run_async

deliveries_app = typer.Typer(
    no_args_is_help=True,
    help="Webhook deliveries (the outbox): list them, replay dead-lettered ones.",
)

_STATUS = {"pending": "yellow", "delivered": "green", "failed": "bold red"}


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "—"


@deliveries_app.command("list")
def deliveries_list(
    failed: Annotated[
        bool, typer.Option("--failed", help="Only dead-lettered (failed) deliveries.")
    ] = False,
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
) -> None:
    """The newest deliveries: status, attempts, the last answer and the next attempt."""
    settings = build_settings()
    from app.ops.deliveries import list_deliveries

    rows = run_async(
        lambda: list_deliveries(settings, failed=failed, endpoint=endpoint, limit=limit)
    )
    if not rows:
        console.print("no failed deliveries" if failed else "no deliveries yet")
        return
    table = Table(title="webhook deliveries (newest first)", title_justify="left")
    for column in ("id", "event", "endpoint", "status", "attempts", "last", "next attempt"):
        table.add_column(column, justify="right" if column in ("id", "attempts") else "left")
    for d in rows:
        # The error names the HTTP status when there was one ("HTTP 503: ...").
        last = d.last_error or (str(d.last_status) if d.last_status is not None else "")
        table.add_row(
            str(d.id),
            escape(d.event_id),
            escape(d.endpoint),
            f"[{_STATUS[d.status]}]{d.status}[/]",
            str(d.attempts),
            escape(last[:80]),
            _when(d.next_attempt_at) if d.status == "pending" else "—",
        )
    console.print(table)


@deliveries_app.command("retry")
def deliveries_retry(
    ids: Annotated[list[int] | None, typer.Argument(help="Delivery ids to send again.")] = None,
    all_failed: Annotated[
        bool, typer.Option("--all-failed", help="Every dead-lettered delivery.")
    ] = False,
) -> None:
    """Send deliveries again: back to pending, attempts reset, due now (the relay sends them)."""
    settings = build_settings()
    from app.ops.deliveries import retry_deliveries

    count = run_async(lambda: retry_deliveries(settings, ids or [], all_failed=all_failed))
    console.print(f"{count} deliver{'y' if count == 1 else 'ies'} queued to be sent again")
