"""Versioned model artifacts on disk: skops files with a checksum and a metadata record.

Layout under ``<data_dir>/models``::

    transaction.fraud/
        CHAMPION              the version in service (one line)
        v1/model.skops        the estimator, skops format (never pickle)
        v1/meta.json          features, metrics, training window, sha256 of model.skops

Loading verifies the checksum and only admits the object types on ``TRUSTED_TYPES``:
a tampered or corrupt artifact is refused with a ``ConfigError`` naming the file.
(A later issue moves the registry into database tables; this folder stays the
artifact store.)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import skops.io as sio

from app.errors import ConfigError

# Types skops does not trust by default but that our own estimators are made of.
TRUSTED_TYPES: frozenset[str] = frozenset(
    {"sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"}
)

_VERSION = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class ModelMeta:
    name: str
    version: int
    kind: str  # "binary" (score = P(positive)) or "multiclass" (score = top label)
    features: tuple[str, ...]
    metrics: dict[str, float]
    created_at: str
    trained_on: str
    sha256: str = ""
    classes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def tag(self) -> str:
        return f"v{self.version}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def champion_version(models_dir: Path, name: str) -> int | None:
    pointer = models_dir / name / "CHAMPION"
    if not pointer.is_file():
        return None
    text = pointer.read_text().strip()
    if not _VERSION.fullmatch(text):
        raise ConfigError(
            f"{pointer} should hold a version number, found {text!r}: fix or delete it"
        )
    return int(text)


def save_model(models_dir: Path, meta: ModelMeta, estimator: Any) -> ModelMeta:
    """Write a new version and make it the champion; the pointer moves last, atomically."""
    folder = models_dir / meta.name / meta.tag
    folder.mkdir(parents=True, exist_ok=False)
    model_path = folder / "model.skops"
    sio.dump(estimator, model_path)
    stored = ModelMeta(**{**asdict(meta), "sha256": _sha256(model_path)})
    (folder / "meta.json").write_text(json.dumps(asdict(stored), indent=2, sort_keys=True))
    pointer = models_dir / meta.name / "CHAMPION"
    tmp = pointer.with_suffix(".tmp")
    tmp.write_text(f"{meta.version}\n")
    os.replace(tmp, pointer)
    return stored


def next_version(models_dir: Path, name: str) -> int:
    folder = models_dir / name
    versions = [
        int(p.name[1:]) for p in folder.glob("v*") if p.is_dir() and _VERSION.fullmatch(p.name[1:])
    ]
    return max(versions, default=0) + 1


def load_model(models_dir: Path, name: str, version: int) -> tuple[ModelMeta, Any]:
    folder = models_dir / name / f"v{version}"
    meta_path, model_path = folder / "meta.json", folder / "model.skops"
    if not (meta_path.is_file() and model_path.is_file()):
        raise ConfigError(
            f"model {name} v{version} is incomplete in {folder}: "
            "delete the folder and its CHAMPION pointer to retrain, or restore it."
        )
    try:
        raw = json.loads(meta_path.read_text())
        meta = ModelMeta(
            **{**raw, "features": tuple(raw["features"]), "classes": tuple(raw.get("classes", ()))}
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"{meta_path} is not a valid model record ({exc}): restore or delete it"
        ) from exc
    actual = _sha256(model_path)
    if actual != meta.sha256:
        raise ConfigError(
            f"{model_path} does not match its recorded checksum (expected {meta.sha256[:12]}…, "
            f"found {actual[:12]}…): the artifact is corrupt or was replaced; "
            "restore it or retrain."
        )
    untrusted = set(sio.get_untrusted_types(file=model_path)) - TRUSTED_TYPES
    if untrusted:
        raise ConfigError(
            f"{model_path} contains object types Arbiter does not load: {sorted(untrusted)}"
        )
    estimator = sio.load(model_path, trusted=sorted(TRUSTED_TYPES))
    return meta, estimator


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
