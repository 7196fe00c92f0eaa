"""Loading model versions: verify their files, then hand each to its family's loader.

Pure of I/O libraries (files only), so the trainer's child process and the service load
versions the same way. ``scorer_from_folder`` builds a scorer straight from a models
folder, without a registry (the benchmarks, the README check).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from app.errors import ConfigError
from app.inference import artifacts
from app.inference.base import Served
from app.inference.scoring import Scorer
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


def scorer_from_folder(models_dir: Path, names: Collection[str] | None = None) -> Scorer:
    """Without a registry: the newest version of every model in ``models_dir`` (of each
    of ``names``, when given, and every one of them must be there).

    Files only (the trainer's ``app.trainer.jobs.first.train_missing`` writes first
    models into a folder).
    """
    newest: dict[str, ModelMeta] = {}
    for meta in artifacts.scan(models_dir):
        newest[meta.name] = meta  # scan sorts by version: the last one wins
    wanted = list(newest) if names is None else list(names)
    missing = [name for name in wanted if name not in newest]
    if missing or not wanted:
        raise ConfigError(
            f"{models_dir} holds no version of {', '.join(missing) or 'any model'}: train "
            "first models into it (app.trainer.jobs.first.train_missing) or use a complete "
            "models folder"
        )
    return Scorer({name: load_served(models_dir, newest[name]) for name in wanted})
