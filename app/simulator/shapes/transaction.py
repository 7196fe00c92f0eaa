"""The ``transaction`` event: one card or account payment, scored for fraud."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from schemas.common import Contract, CountryCode, CurrencyCode, EventBase, PartyId

MAX_AMOUNT = 10_000_000


class Device(Contract):
    """The device the payment came from; ``is_new`` means first seen for this account."""

    device_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    kind: Literal["mobile", "desktop", "pos", "atm", "unknown"]
    is_new: bool


class Transaction(EventBase):
    """A payment by an account; partitioned by ``account_id``."""

    event_type: ClassVar[str] = "transaction"

    account_id: PartyId
    amount: Annotated[float, Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False)]
    currency: CurrencyCode
    merchant: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    merchant_category: Annotated[
        str,
        StringConstraints(min_length=1, max_length=64),
        Field(examples=["grocery", "electronics", "travel", "gambling", "digital_goods"]),
    ]
    channel: Literal["card_present", "online", "mobile_app", "atm", "transfer"]
    country: CountryCode = Field(description="Where the transaction happens.")
    card_country: CountryCode = Field(description="Where the card or account was issued.")
    device: Device

    @property
    def partition_key(self) -> str:
        return self.account_id
