"""The shipped event types as the tests use them: read from ``schemas/*.yaml`` like any
declared type (the application itself names no shipped type)."""

from __future__ import annotations

from pathlib import Path

from app.declarations import DeclaredModel, EventTypes, served_types

SHIPPED_SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"

TYPES: EventTypes = served_types(SHIPPED_SCHEMAS, ("order", "ticket", "transaction"))
# Every shipped model by name, its declaration; its family; the scores rules may read.
CATALOG: dict[str, DeclaredModel] = TYPES.catalog()
MODELS: dict[str, str] = {name: model.family for name, model in CATALOG.items()}
SCORE_TYPES: dict[str, dict[str, str]] = TYPES.score_kinds()
