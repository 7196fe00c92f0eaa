"""``arbiter db upgrade``: migrate the decision ledger database (``app.ops.db``)."""

from __future__ import annotations

import typer

from app.cli.options import build_settings, console, run_async

db_app = typer.Typer(no_args_is_help=True, help="The decision ledger database.")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (Alembic) to ARBITER_DATABASE_URL (default: SQLite)."""
    from app.ops.db import upgrade_database

    settings = build_settings()
    revision = run_async(lambda: upgrade_database(settings))
    console.print(f"database is at revision {revision}")
