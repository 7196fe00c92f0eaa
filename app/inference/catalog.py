"""The models Arbiter serves and the scores they write: the contract between the models
and the rule files (``arbiter rules check`` validates ``scores.<name>`` against it).

Pure data, so checking rules never loads a model library.
"""

from __future__ import annotations

__all__ = ["MODELS", "SCORE_TYPES"]

# Every model name (``<event type>.<model>``) and its family; each needs a champion.
MODELS: dict[str, str] = {
    "transaction.fraud": "tabular",
    "order.risk": "tabular",
    "ticket.category": "text",
    "ticket.urgency": "text",
    "ticket.sentiment": "text",
}

# What each event type's scores are called and their kind: the rules checker uses this.
SCORE_TYPES: dict[str, dict[str, str]] = {
    "transaction": {"fraud": "number"},
    "order": {"risk": "number"},
    "ticket": {
        "category": "string",
        "category_confidence": "number",
        "urgency": "string",
        "urgency_confidence": "number",
        "sentiment": "string",
        "sentiment_confidence": "number",
    },
}
