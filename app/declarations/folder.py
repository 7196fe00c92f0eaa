"""A folder of YAML files followed by their content, for the hot reloads of the rule
files (``app.rules.reload``) and of the declarations (``app.declarations.reload``).

Changes are found by a hash of every file's name and bytes, robust to editors that
rewrite files and to Kubernetes ConfigMap symlink swaps; an unreadable file counts as a
change. Pure: reads files, nothing else.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path


def folder_fingerprint(directory: Path, patterns: Sequence[str] = ("*.yaml",)) -> str:
    """A hash of the name and bytes of every file of ``directory`` matching ``patterns``."""
    digest = hashlib.sha256()
    for path in sorted({p for pattern in patterns for p in directory.glob(pattern)}):
        digest.update(path.name.encode())
        try:
            digest.update(path.read_bytes())
        except OSError as exc:
            digest.update(repr(exc).encode())
    return digest.hexdigest()


class FolderWatch:
    """``changed()`` gives the folder's new fingerprint when its files changed since the
    last look (looked at most every ``interval_s``; 0 never looks), else None."""

    def __init__(
        self, directory: Path, patterns: Sequence[str] = ("*.yaml",), *, interval_s: float
    ) -> None:
        self.directory = directory
        self._patterns = tuple(patterns)
        self._interval = interval_s
        self._seen = folder_fingerprint(directory, self._patterns)
        self._next = time.monotonic() + interval_s

    def changed(self, *, force: bool = False) -> str | None:
        """The new fingerprint if the files changed; ``force`` looks now, whatever the
        interval."""
        now = time.monotonic()
        if not force and (self._interval <= 0 or now < self._next):
            return None
        self._next = now + self._interval
        fingerprint = folder_fingerprint(self.directory, self._patterns)
        if fingerprint == self._seen:
            return None
        self._seen = fingerprint
        return fingerprint

    def forget(self) -> None:
        """Report the folder as changed at the next look, even if it is not (a change
        refused before is to be checked again)."""
        self._seen = ""
