"""Export the JSON Schemas of the messages every type shares (outcomes, decisions), for
integrators and for review in diffs; each event type's comes from its declaration."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.decision import Decision
from schemas.outcome import Outcome

EXPORTED: dict[str, type[BaseModel]] = {
    "outcome": Outcome,
    "decision": Decision,
}


def write_json_schemas(directory: Path) -> list[Path]:
    """Write ``<name>.schema.json`` for every exported contract into ``directory``.

    Creates the directory; output is sorted and indented so a contract change shows
    as a readable diff. Returns the written paths.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, model in EXPORTED.items():
        path = directory / f"{name}.schema.json"
        schema = model.model_json_schema()
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
