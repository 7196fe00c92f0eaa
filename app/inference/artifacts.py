"""The artifact folder: every model version's files, written once and checksummed.

Layout under ``<data_dir>/models``::

    transaction.fraud/
        v1/model.skops        the scikit-learn Pipeline (skops format, never pickle)
        v1/meta.json          what the version is, with the sha256 of every file
    ticket.category/
        v1/head.safetensors   the classifier head on the text encoder (safetensors)
        v1/meta.json

A version folder appears complete or not at all: files are written into a staging
folder which is renamed onto the claimed ``vN`` name last, so a crash mid-write never
leaves a half-written version that looks whole. The registry tables (``model_versions``)
say which version serves; their copy of the checksums is the one loading trusts, so
replacing a file *and* its ``meta.json`` is still refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from app.errors import ConfigError
from app.inference.base import Fitted
from app.values import ModelMeta

_VERSION = re.compile(r"v([0-9]{1,9})")
_NAME = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"model name {name!r} is not valid: use '<event type>.<model>', e.g. transaction.fraud"
        )
    return name


def version_folder(models_dir: Path, name: str, version: int) -> Path:
    return models_dir / name / f"v{version}"


def next_version(models_dir: Path, name: str) -> int:
    folder = models_dir / name
    found = [int(m.group(1)) for p in folder.glob("v*") if (m := _VERSION.fullmatch(p.name))]
    return max(found, default=0) + 1


def describe(
    name: str,
    fitted: Fitted,
    *,
    version: int,
    trained_on: str,
    window: tuple[str, str] = ("", ""),
    files: dict[str, str] | None = None,
) -> ModelMeta:
    """The record of ``fitted`` as version ``version`` of ``name`` (created now)."""
    return ModelMeta(
        name=name,
        version=version,
        family=fitted.family,
        kind=fitted.kind,
        features=tuple(fitted.features),
        metrics=dict(fitted.metrics),
        created_at=now_iso(),
        trained_on=trained_on,
        window_start=window[0],
        window_end=window[1],
        classes=tuple(fitted.classes),
        params=dict(fitted.params),
        files=dict(files or {}),
    )


def write_version(
    models_dir: Path,
    name: str,
    fitted: Fitted,
    *,
    trained_on: str,
    window: tuple[str, str] = ("", ""),
    first_version: int = 1,
) -> ModelMeta:
    """Write ``fitted`` as the next version of ``name``; returns its meta (with checksums)."""
    parent = models_dir / check_name(name)
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        files = fitted.write(staging)
        checksums = {f: sha256_file(staging / f) for f in sorted(files)}
        version = max(next_version(models_dir, name), first_version)
        while True:  # claim a version number; another writer may take the same one
            try:
                (parent / f"v{version}").mkdir()
                break
            except FileExistsError:
                version += 1
        meta = describe(
            name, fitted, version=version, trained_on=trained_on, window=window, files=checksums
        )
        (staging / "meta.json").write_text(json.dumps(asdict(meta), indent=2, sort_keys=True))
        # Renaming onto the claimed (empty) folder is atomic: readers never see it half done.
        os.replace(staging, parent / f"v{version}")
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return meta


def meta_from_json(text: str, where: Path) -> ModelMeta:
    try:
        raw = json.loads(text)
        return ModelMeta(
            **{
                **raw,
                "features": tuple(raw["features"]),
                "classes": tuple(raw.get("classes", ())),
                "params": dict(raw.get("params", {})),
                "files": dict(raw.get("files", {})),
            }
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"{where} is not a valid model record ({exc}): restore or delete the version folder"
        ) from exc


def read_meta(models_dir: Path, name: str, version: int) -> ModelMeta:
    path = version_folder(models_dir, name, version) / "meta.json"
    if not path.is_file():
        raise ConfigError(
            f"model {name} v{version} has no {path}: the version is incomplete; "
            "restore the folder or register another version"
        )
    meta = meta_from_json(path.read_text(), path)
    if (meta.name, meta.version) != (name, version):
        raise ConfigError(
            f"{path} describes {meta.name} v{meta.version}, not {name} v{version}: "
            "the folder was moved or replaced; restore it"
        )
    return meta


def scan(models_dir: Path) -> list[ModelMeta]:
    """Every complete version on disk (a folder with a readable ``meta.json``), by name
    and version. Incomplete folders (a crash while writing) are skipped."""
    found: list[ModelMeta] = []
    if not models_dir.is_dir():
        return found
    for folder in sorted(models_dir.glob("*/v*")):
        m = _VERSION.fullmatch(folder.name)
        if not (m and (folder / "meta.json").is_file()):
            continue
        with contextlib.suppress(ConfigError):
            found.append(read_meta(models_dir, folder.parent.name, int(m.group(1))))
    return sorted(found, key=lambda meta: (meta.name, meta.version))


def verify(models_dir: Path, meta: ModelMeta) -> Path:
    """Check every file of the version against ``meta.files`` (the registry's copy);
    returns the version folder or raises ``ConfigError`` naming the bad file."""
    folder = version_folder(models_dir, meta.name, meta.version)
    if not meta.files:
        raise ConfigError(f"model {meta.name} {meta.tag} records no files: re-register it")
    for file, expected in sorted(meta.files.items()):
        path = folder / file
        if Path(file).name != file or not path.is_file():
            raise ConfigError(
                f"{path} is missing: model {meta.name} {meta.tag} cannot load; "
                "restore the file or retire the version"
            )
        actual = sha256_file(path)
        if actual != expected:
            raise ConfigError(
                f"{path} does not match its recorded checksum (expected {expected[:12]}…, "
                f"found {actual[:12]}…): the artifact is corrupt or was replaced; "
                "restore it or retrain"
            )
    return folder
