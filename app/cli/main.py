"""The ``arbiter`` command: the root Typer app, with every command module registered.

Each command builds settings and calls one service function (``app.ops``, the trainer,
the processes); the command modules share ``app.cli.options`` and never import this
module or each other. ``main`` is the console script (``arbiter = "app.cli:main"``).
"""

from __future__ import annotations

import sys

import typer

from app.cli.db import db_app
from app.cli.deliveries import deliveries_app
from app.cli.importer import import_history
from app.cli.keys import keys_app
from app.cli.models import explain, models_app
from app.cli.rules import rules_app
from app.cli.schemas import schemas_app
from app.cli.service import broker, demo, run, simulate
from app.cli.trainer import train, trainer

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Arbiter: events in, decisions out."
)
# `arbiter --help` lists the commands in this order.
for command in (explain, train, trainer, run, demo, broker, simulate):
    app.command()(command)
app.command("import")(import_history)
app.add_typer(rules_app, name="rules")
app.add_typer(db_app, name="db")
app.add_typer(schemas_app, name="schemas")
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(deliveries_app, name="deliveries")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
