"""Hot reload of rule files: notice a change in the rules folder, check it, swap it in.

The consume loop asks ``RulesWatcher.poll()`` between batches. A change is detected by
the content hash of the folder's ``*.yaml``/``*.yml`` files (robust to editors that
rewrite files and to Kubernetes ConfigMap symlink swaps). New rules are checked exactly
like ``arbiter rules check``; a folder with any problem is refused as a whole, the
problems are logged, and the rules in service keep serving.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from app.rules.language.spec import RuleProblem, RuleSet
from app.rules.loader import check_rules


def folder_fingerprint(rules_dir: Path) -> str:
    """A hash of every rule file's name and bytes; unreadable files count as changes."""
    digest = hashlib.sha256()
    for path in sorted([*rules_dir.glob("*.yaml"), *rules_dir.glob("*.yml")]):
        digest.update(path.name.encode())
        try:
            digest.update(path.read_bytes())
        except OSError as exc:
            digest.update(repr(exc).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ReloadResult:
    """A changed folder: either new rulesets to swap in, or the problems that refused it."""

    fingerprint: str
    rulesets: dict[str, RuleSet] | None
    problems: tuple[RuleProblem, ...]


class RulesWatcher:
    def __init__(
        self,
        rules_dir: Path,
        field_types: Mapping[str, Mapping[str, str]],
        score_types: Mapping[str, Mapping[str, str]],
        *,
        interval_s: float = 2.0,
    ) -> None:
        self._dir = rules_dir
        self._fields = field_types
        self._scores = score_types
        self._interval = interval_s
        self._seen = folder_fingerprint(rules_dir)
        self._next = time.monotonic() + interval_s

    def poll(self) -> ReloadResult | None:
        """``None`` unless the folder changed since the last poll (checked at most every
        ``interval_s``); a refused change is reported once, not on every poll."""
        now = time.monotonic()
        if self._interval <= 0 or now < self._next:
            return None
        self._next = now + self._interval
        current = folder_fingerprint(self._dir)
        if current == self._seen:
            return None
        self._seen = current
        rulesets, problems = check_rules(self._dir, self._fields, self._scores)
        if problems:
            return ReloadResult(current, None, tuple(problems))
        return ReloadResult(current, rulesets, ())
