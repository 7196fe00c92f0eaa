"""The names and kinds of the scores each event type gets: the contract between the models
and the rule files (``arbiter rules check`` validates ``scores.<name>`` against it).

Pure data, so checking rules never loads a model library.
"""

from __future__ import annotations

__all__ = ["SCORE_TYPES"]

# What each event type's scores are called and their kind: the rules checker uses this.
SCORE_TYPES: dict[str, dict[str, str]] = {
    "transaction": {"fraud": "number"},
    "order": {"risk": "number"},
    "ticket": {
        "category": "string",
        "category_confidence": "number",
        "urgency": "string",
        "urgency_confidence": "number",
    },
}
