"""The ``ticket`` event: a customer support request, classified and routed from its text."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from schemas.common import EventBase, PartyId, limit_text

MAX_SUBJECT_CHARS = 200
MAX_BODY_CHARS = 10_000


class Ticket(EventBase):
    """A support request from a customer; partitioned by ``customer_id``."""

    event_type: ClassVar[str] = "ticket"

    customer_id: PartyId
    channel: Literal["email", "chat", "phone", "web_form", "social"]
    subject: Annotated[
        str,
        Field(min_length=1, json_schema_extra={"maxLength": MAX_SUBJECT_CHARS}),
        limit_text(MAX_SUBJECT_CHARS),
    ]
    body: Annotated[
        str,
        Field(min_length=1, json_schema_extra={"maxLength": MAX_BODY_CHARS}),
        limit_text(MAX_BODY_CHARS),
    ]
    customer_tier: Literal["free", "standard", "premium", "enterprise"]

    @property
    def partition_key(self) -> str:
        return self.customer_id
