"""The ``Outcome`` message: what really happened to an event that was decided earlier.

Outcomes arrive on ``outcomes.<type>`` (or ``POST /v1/outcomes/<type>``), are joined to
the logged decision by ``event_id`` and become training labels.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from schemas.common import TYPE_NAME_PATTERN, Contract, EventId, PartyId, Timestamp

# Any declared event type (schemas/*.yaml): lower case, digits and underscores. Whether
# the type is served is checked where the outcome arrives (its topic or route).
EventType = Annotated[str, StringConstraints(pattern=TYPE_NAME_PATTERN)]


class Outcome(Contract):
    """Ground truth for one decided event.

    ``labels`` examples: ``{"fraud": true}``, ``{"status": "chargeback"}``,
    ``{"category": "billing"}``.
    """

    event_id: EventId = Field(description="The id of the original, decided event.")
    event_type: EventType
    partition_key: PartyId
    occurred_at: Timestamp = Field(description="When the outcome was observed.")
    labels: Annotated[
        dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], bool | str | float],
        Field(min_length=1, max_length=50),
    ]
    source: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
