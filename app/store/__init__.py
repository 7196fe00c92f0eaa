"""The store: the decision ledger (exactly one decision per event_id) and its schema.

``db`` builds engines, ``tables`` defines the schema, ``migrate`` keeps the database at
the schema this code expects, ``ledger`` reads and writes decisions and dead letters.
"""

from __future__ import annotations

from app.store.db import check_connection, create_engine
from app.store.ledger import Ledger
from app.store.migrate import current_revision, head_revision, require_current, upgrade

__all__ = [
    "Ledger",
    "check_connection",
    "create_engine",
    "current_revision",
    "head_revision",
    "require_current",
    "upgrade",
]
