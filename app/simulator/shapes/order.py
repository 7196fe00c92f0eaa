"""The ``order`` event: a shop order, scored for chargeback/return/cancellation risk."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from schemas.common import Contract, CountryCode, CurrencyCode, EventBase, Money, PartyId


class OrderItem(Contract):
    """One line of an order."""

    sku: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    quantity: Annotated[int, Field(ge=1, le=1000)]
    unit_price: Money


class Order(EventBase):
    """An order placed by a customer; partitioned by ``customer_id``.

    ``total`` is what the customer pays (items plus shipping, after discounts), so it
    is not required to equal the sum of the lines.
    """

    event_type: ClassVar[str] = "order"

    customer_id: PartyId
    items: Annotated[list[OrderItem], Field(min_length=1, max_length=200)]
    total: Money
    currency: CurrencyCode
    payment_method: Literal[
        "card", "paypal", "bank_transfer", "gift_card", "crypto", "cash_on_delivery"
    ]
    billing_country: CountryCode
    shipping_country: CountryCode
    first_order: bool

    @property
    def partition_key(self) -> str:
        return self.customer_id
