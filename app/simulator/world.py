"""The simulated world every event is drawn from: parties, places, merchants, catalogue.

``build_world`` draws, once per seed and before any event, the account holders (who pay
by card and write tickets), the shop's customers (who order and write tickets) and the
shop's catalogue; the builders (``app.simulator.transactions``, ``orders``, ``tickets``)
and the planted patterns (``app.simulator.patterns``) pick from it with ``pick``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# Home countries share currencies of similar value, so an amount means roughly the same
# everywhere and "unusually large" stays learnable without currency conversion.
_HOMES: tuple[tuple[str, str, float], ...] = (
    ("US", "USD", 30),
    ("GB", "GBP", 12),
    ("DE", "EUR", 12),
    ("FR", "EUR", 8),
    ("ES", "EUR", 5),
    ("IT", "EUR", 5),
    ("NL", "EUR", 4),
    ("IE", "EUR", 2),
    ("AT", "EUR", 2),
    ("BE", "EUR", 2),
    ("CA", "CAD", 6),
    ("AU", "AUD", 5),
    ("CH", "CHF", 3),
    ("NZ", "NZD", 2),
    ("SG", "SGD", 2),
)
ABROAD: tuple[str, ...] = (
    "US", "GB", "FR", "ES", "IT", "PT", "GR", "TH", "MX", "TR",
    "AE", "NG", "RO", "ID", "VN", "PH", "BR", "ZA", "MA", "CN",
)  # fmt: skip

# category: (weight, log-mean, log-sd, merchants)
CATEGORIES: dict[str, tuple[float, float, float, tuple[str, ...]]] = {
    "grocery": (22, 3.4, 0.6, ("FreshMart", "Green Basket", "Corner Grocer", "DailyFoods")),
    "restaurants": (16, 3.2, 0.6, ("Trattoria Roma", "Burger Barn", "Sushi Go", "Cafe Nord")),
    "fuel": (9, 3.9, 0.35, ("PetroLine", "QuickFuel", "Highway Gas")),
    "clothing": (10, 4.2, 0.6, ("Threadline", "UrbanWear", "Denim & Co")),
    "electronics": (8, 5.2, 0.8, ("VoltHub", "PixelStore", "Circuit City Online")),
    "travel": (6, 5.9, 0.7, ("SkyJet Airlines", "StayWell Hotels", "RailEurope")),
    "digital_goods": (10, 2.8, 0.9, ("AppPlanet", "GameVault", "StreamPlus")),
    "gambling": (3, 4.0, 1.0, ("LuckySpin Casino", "BetKing")),
    "jewelry": (2, 6.0, 0.8, ("Goldsmiths & Sons", "Diamond Lane")),
    "money_transfer": (4, 5.3, 1.0, ("WireFast", "SendHome")),
    "cash_withdrawal": (10, 4.3, 0.6, ("ATM Network",)),
}
CATEGORY_NAMES = tuple(CATEGORIES)
CATEGORY_WEIGHTS = tuple(spec[0] for spec in CATEGORIES.values())


@dataclass(frozen=True)
class Party:
    """An account holder or a shop customer: home, age with us, tier and own devices."""

    party_id: str
    country: str
    currency: str
    age_days: int
    tier: str
    devices: tuple[str, ...]


@dataclass(frozen=True)
class World:
    """Everyone and everything events are drawn from, fixed for one seed."""

    accounts: tuple[Party, ...]
    customers: tuple[Party, ...]
    catalogue: tuple[tuple[str, float], ...]


def build_world(rng: random.Random, seed: int) -> World:
    """400 accounts, 300 customers and 60 catalogue items, the first draws of ``rng``."""

    def party(prefix: str, k: int) -> Party:
        country, currency, _ = pick(rng, _HOMES, [h[2] for h in _HOMES])
        devices = tuple(f"dev-{seed}-{prefix}{k:04d}-{d}" for d in range(rng.randint(1, 3)))
        tier = pick(rng, ("free", "standard", "premium", "enterprise"), (40, 35, 18, 7))
        age = int(rng.expovariate(1 / 700)) + 1
        return Party(f"{prefix}-{k:05d}", country, currency, age, tier, devices)

    accounts = tuple(party("acct", k) for k in range(400))
    customers = tuple(party("cust", k) for k in range(300))
    catalogue = tuple(
        (f"SKU-{k:05d}", math.floor(min(2000.0, rng.lognormvariate(3.3, 0.9))) + 0.99)
        for k in range(60)
    )
    return World(accounts, customers, catalogue)


def pick(rng: random.Random, options: Sequence[T], weights: Sequence[float]) -> T:
    return rng.choices(options, weights=weights, k=1)[0]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))
