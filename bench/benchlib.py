"""Shared by the benchmarks: which commit a figure was measured on."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.declarations import DeclaredModel

REPO = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """Short HEAD, marked when the working tree has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} (+ uncommitted changes)" if dirty else head


RESULTS = REPO / "bench" / "RESULTS.md"


def append_results(section: str) -> int:
    """Append a dated section to bench/RESULTS.md and say so; returns the exit status."""
    with RESULTS.open("a", encoding="utf-8") as out:
        out.write(section)
    print(f"\nappended to {RESULTS.relative_to(REPO)}")
    return 0


# The event types the simulator makes, which the benchmarks send.
SHIPPED_TYPES: tuple[str, ...] = ("order", "ticket", "transaction")


def shipped_catalog() -> dict[str, DeclaredModel]:
    """The models the shipped declarations (schemas/*.yaml) name, by name."""
    from app.declarations import served_types

    return served_types(REPO / "schemas", SHIPPED_TYPES).catalog()
