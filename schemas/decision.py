"""The ``Decision`` message: what Arbiter decided for one event and why.

Published on ``decisions.<type>``, returned by ``POST /v1/decide/<type>`` and stored in
the decision log; it round-trips through JSON unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints

from schemas.common import Contract, EventId, PartyId, Timestamp
from schemas.outcome import EventType


class Decision(Contract):
    """One decision: the verdict, the actions it triggers and everything that led to it."""

    event_id: EventId
    event_type: EventType
    partition_key: PartyId
    decision: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    actions: tuple[dict[str, Any], ...] = ()
    scores: dict[str, float | str] = Field(default_factory=dict)
    model_versions: dict[str, str] = Field(default_factory=dict)
    rules_fired: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    explanations: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per model: how its score came about, e.g. "
        '{"method": "occlusion", "top": [["amount", 1.2], ...]} (log-odds contributions).',
    )
    ruleset_version: Annotated[str, StringConstraints(max_length=32)] = Field(
        default="", description="Content hash of the rule files that made the decision."
    )
    occurred_at: Timestamp = Field(description="When the event happened (from the event).")
    decided_at: Timestamp
    latency_ms: Annotated[float, Field(ge=0, allow_inf_nan=False)]
