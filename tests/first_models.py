"""The first-start-up models for the test suite: trained once, cached on disk, and never
inside a test's timeout.

Training them takes minutes (the text heads compare encoder variants), far more on a
busy machine; inside the first test that needs them it would eat that test's timeout
and fail every test after it. So ``tests/conftest.py`` starts this module as a process
of its own as soon as collection shows a test needs the models, lets the other tests
run meanwhile, and waits for it before such a test's timeout starts.

The cache lives in ``.cache/first-models/`` (git-ignored), one folder per build. A build
records what determined it: the sha256 of every file of ours it imported (and every
file beside them: schemas, data), the versions of the installed packages it imported,
and the Python version. A later run reuses a build whose record still holds; moving,
changing or deleting any of those files, or upgrading one of those packages, makes it
train afresh. A file lock lets parallel test processes (pytest-xdist workers, two
sessions) share one build.

``python -m tests.first_models`` makes sure a build is there (training one if not) and
prints its models folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("ARBITER_TEST_CACHE", ROOT / ".cache")) / "first-models"
MANIFEST = "manifest.json"  # written last: a folder without one is a build cut short
BUILD_LOG = "build.log"
KEEP = 3  # builds kept (say, for branches switched back and forth)
_SOURCES = ("app", "connectors", "schemas")  # where files of ours live


def _train(models_dir: Path) -> None:
    """Train version 1 of every catalog model into ``models_dir`` (the one place that
    names the function that does it)."""
    from app.trainer.jobs.first import train_first
    from tests.shipped import CATALOG

    train_first(models_dir, list(CATALOG.values()), on_progress=lambda msg: print(msg, flush=True))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _our_files() -> list[Path]:
    """Every file of ours this process imported, the data files beside them, and this
    module (it says how to train), sorted."""
    imported = {Path(__file__).resolve()}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().is_relative_to(ROOT):
            path = Path(file).resolve()
            if path.relative_to(ROOT).parts[0] in _SOURCES:
                imported.add(path)
    data = {
        p
        for folder in {p.parent for p in imported}
        for p in folder.iterdir()
        if p.is_file() and p.suffix not in {".py", ".pyc"}
    }
    return sorted(imported | data)


def _packages() -> dict[str, str]:
    """``{distribution: version}`` of every installed package this process imported."""
    owners = importlib.metadata.packages_distributions()
    top = {name.partition(".")[0] for name in list(sys.modules)}
    dists = {dist for name in top for dist in owners.get(name, ())}
    return {dist: importlib.metadata.version(dist) for dist in sorted(dists)}


def _python() -> str:
    return sys.version


def _record() -> dict[str, object]:
    return {
        "python": _python(),
        "packages": _packages(),
        "files": {str(p.relative_to(ROOT)): _sha256(p) for p in _our_files()},
    }


def _holds(record: dict[str, object]) -> bool:
    """Whether a build's record still describes this tree and these packages."""
    if record.get("python") != _python():
        return False
    files = record.get("files")
    packages = record.get("packages")
    if not isinstance(files, dict) or not isinstance(packages, dict) or not files:
        return False
    for name, digest in files.items():
        path = ROOT / name
        if not path.is_file() or _sha256(path) != digest:
            return False
    for dist, version in packages.items():
        try:
            if importlib.metadata.version(dist) != version:
                return False
        except importlib.metadata.PackageNotFoundError:
            return False
    return True


def _builds() -> list[Path]:
    """Finished builds, newest first."""
    if not CACHE.is_dir():
        return []
    done = [d for d in CACHE.iterdir() if (d / MANIFEST).is_file()]
    return sorted(done, key=lambda d: (d / MANIFEST).stat().st_mtime, reverse=True)


def find() -> Path | None:
    """The models folder of a build that still holds, if there is one (no lock needed:
    a build becomes visible only once complete)."""
    for build in _builds():
        try:
            record = json.loads((build / MANIFEST).read_text())
        except (OSError, ValueError):
            continue
        if _holds(record):
            return build / "models"
    return None


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _prune() -> None:
    """Drop builds cut short and all but the ``KEEP`` newest finished ones."""
    finished = _builds()
    for folder in CACHE.iterdir():
        if folder.is_dir() and (folder not in finished or folder in finished[KEEP:]):
            shutil.rmtree(folder, ignore_errors=True)


def build() -> Path:
    """The cached models folder, trained here first if no build holds (under the lock,
    so concurrent callers wait for one build instead of training twice)."""
    with _locked():
        found = find()
        if found is not None:
            return found
        _prune()
        folder = CACHE / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        _train(folder / "models")
        record = _record()
        record["train_s"] = round(time.monotonic() - started, 1)
        (folder / MANIFEST).write_text(json.dumps(record, indent=1, sort_keys=True))
        return folder / "models"


def command() -> list[str]:
    """How the suite starts a build: a process of its own, this tree first on its path."""
    return [sys.executable, "-m", "tests.first_models"]


def environment() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


if __name__ == "__main__":
    print(build(), flush=True)
