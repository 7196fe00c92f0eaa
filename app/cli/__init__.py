"""The ``arbiter`` command line: ``main`` builds the app (``app.cli.main``), one module
per command group, ``options`` for what they share."""

from app.cli.main import main

__all__ = ["main"]
