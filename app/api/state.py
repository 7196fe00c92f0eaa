"""What the routes share, kept on ``app.state.api``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.api.decide import Decider
from app.service import Components
from app.settings import Settings
from app.store.ledger import Ledger
from app.values import OutMessage


@dataclass
class Readiness:
    """Set by the runner: ``draining`` at shutdown makes /readyz answer 503 so load
    balancers stop sending traffic while in-flight requests finish."""

    draining: bool = False


@dataclass
class ApiState:
    settings: Settings
    components: Components
    ledger: Ledger
    publish: Callable[[Sequence[OutMessage]], Awaitable[None]]
    decider: Decider
    deliveries: Callable[[str], Awaitable[list[dict[str, Any]]]]
    readiness: Readiness = field(default_factory=Readiness)
