"""Feature rows of 20,000 simulator transactions: the declared recipe (``features.Rows``,
the columns schemas/transaction.yaml names) vs the hand-written ``transaction_features``
of a tree from before the recipes (49226e9). Run it in each tree; best of five.

    .venv/bin/python bench/feature_rows.py
    PYTHONPATH=/path/to/old/tree .venv/bin/python bench/feature_rows.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.simulator.generate import training_set

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def computer(events: list[Any]) -> tuple[str, Callable[[], list[Any]]]:
    """What this tree computes rows with, and its name."""
    try:
        from app.declarations import served_types
        from app.inference.features import History, Rows, candidate_columns
    except ImportError:  # a tree from before the recipes
        from app.inference.features import History, feature_rows  # type: ignore[attr-defined]

        return "hand-written transaction_features", lambda: feature_rows(
            "transaction", events, History()
        )
    catalog = served_types(SCHEMAS, ("order", "ticket", "transaction")).catalog()
    numeric, categorical = candidate_columns(catalog["transaction.fraud"])
    rows = Rows(numeric, categorical, attributes=True)
    return "declared recipe", lambda: rows.fresh_rows(events, History())


def main() -> None:
    events, _ = training_set("transaction", 20_000, seed=11)
    which, run = computer(events)
    best = 0.0
    for _ in range(5):
        started = time.perf_counter()
        out = run()
        best = max(best, len(events) / (time.perf_counter() - started))
    print(f"{which}: {best:,.0f} rows/s, {len(out[0])} columns")


if __name__ == "__main__":
    main()
