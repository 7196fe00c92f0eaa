"""Loading one model version: verify its files, then hand it to its family's loader.

Pure of I/O libraries (files only), so the trainer's child process and the service load
versions the same way.
"""

from __future__ import annotations

from pathlib import Path

from app.errors import ConfigError
from app.inference import artifacts
from app.inference.base import Served
from app.values import ModelMeta


def load_served(models_dir: Path, meta: ModelMeta) -> Served:
    """Verify and load one version (runs in a worker thread: it reads and deserialises)."""
    folder = artifacts.verify(models_dir, meta)
    if meta.family == "tabular":
        from app.inference import tabular

        return tabular.load(folder, meta)
    if meta.family == "text":
        from app.inference import text

        return text.load(folder, meta)
    raise ConfigError(
        f"model {meta.name} {meta.tag} has unknown family {meta.family!r} "
        "(known: tabular, text): retire the version"
    )
