"""What the routes share, kept on ``app.state.api``, and what they need of the service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.declarations import EventTypes
from app.rules.runtime.engine import RulesEngine
from app.settings import Settings
from app.store.ledger import Ledger
from app.store.registry import ModelRegistry
from app.values import OutMessage
from connectors.http.decide import Decider, Processor

Publish = Callable[[Sequence[OutMessage]], Awaitable[None]]


class Running(Protocol):
    """The parts of the running service the API reads and calls
    (``app.wiring.Components`` is one)."""

    @property
    def processor(self) -> Processor: ...
    @property
    def ledger(self) -> Ledger: ...
    @property
    def registry(self) -> ModelRegistry: ...
    @property
    def rules(self) -> RulesEngine: ...
    @property
    def producer(self) -> Any: ...
    @property
    def publish(self) -> Publish: ...
    @property
    def types(self) -> EventTypes: ...


@dataclass
class Readiness:
    """Set by the runner: ``draining`` at shutdown makes /readyz answer 503 so load
    balancers stop sending traffic while in-flight requests finish."""

    draining: bool = False


@dataclass
class ApiState:
    settings: Settings
    components: Running
    ledger: Ledger
    publish: Publish
    decider: Decider
    deliveries: Callable[[str], Awaitable[list[dict[str, Any]]]]
    readiness: Readiness = field(default_factory=Readiness)
