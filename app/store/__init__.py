"""The store: every table Arbiter keeps, behind small classes that take an engine.

``db`` builds engines, ``tables`` defines the schema, ``migrate`` keeps the database at
the schema this code expects, ``sql`` holds the helpers the others share. ``ledger``
(decisions and dead letters, exactly one decision per event), ``outbox`` (webhook
deliveries), ``outcomes``, ``imported`` (history written by ``arbiter import``),
``registry`` (model versions), ``training`` (runs and leases) and ``keys`` (API keys)
read and write their tables.
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
