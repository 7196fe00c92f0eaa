"""Between batches: declarations, rule files and model versions follow their sources
without a restart.

The consume loop calls ``Upkeep.between_batches()`` before each fetch. Changed
declarations of the served types are checked against the rules and models in service
and swapped in (``arbiter_declarations_reloads_total{result="applied"}``), or refused
while the declarations in service keep serving. A changed rules folder is checked as a
whole and swapped in on the decide thread, or refused (logged,
``arbiter_rules_reloads_total{result="refused"}``) while the rules in service keep
serving; each check follows the other's changes (new declarations are the rules'
vocabulary, and new rules may allow declarations refused before). Promotions, rollbacks
and shadows in the model registry build a new scorer that the processor swaps in.
``serving`` names the versions in service for the batch log line.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import structlog

from app.declarations import EventTypes
from app.declarations.reload import DeclarationsWatcher
from app.errors import ConfigError
from app.metrics import DECLARATIONS_RELOADS, RULES_RELOADS, set_versions_in_service
from app.outbox.config import Endpoints, check_rule_webhooks
from app.pipeline.models import ModelWatcher
from app.pipeline.processor import BatchProcessor
from app.rules.language.spec import Publish, RuleSet
from app.rules.reload import RulesWatcher, vocabulary
from app.rules.runtime.engine import RulesEngine

log = structlog.get_logger("arbiter.upkeep")

EnsureTopics = Callable[[Sequence[str]], Awaitable[object]]
OnTypes = Callable[[EventTypes], None]


def publish_topics(rulesets: Mapping[str, RuleSet]) -> list[str]:
    """Topics that ``publish:`` actions name: created before the rules go into service, so
    a decision is never held up by a topic that does not exist yet."""
    return sorted(
        {
            action.topic
            for ruleset in rulesets.values()
            for rule in ruleset.rules
            for action in rule.actions
            if isinstance(action, Publish)
        }
    )


class Upkeep:
    """Rules hot reload and model swaps, run by the consume loop between batches."""

    def __init__(
        self,
        processor: BatchProcessor,
        rules: RulesEngine,
        rules_watcher: RulesWatcher,
        models: ModelWatcher,
        *,
        endpoints: Endpoints,
        ensure_topics: EnsureTopics,
        rules_dir: Path,
        models_poll_s: float,
        declarations: DeclarationsWatcher | None = None,
        on_types: OnTypes | None = None,
    ) -> None:
        self._processor = processor
        self._rules = rules
        self._rules_watcher = rules_watcher
        self._models = models
        self._endpoints = endpoints
        self._ensure_topics = ensure_topics
        self._rules_dir = rules_dir
        self._models_poll_s = models_poll_s
        self._declarations = declarations
        self._on_types = on_types  # others that read the served types (the HTTP API)
        self.serving: dict[str, object] = {}  # versions in service, for the batch log line
        self._note_serving()

    async def between_batches(self) -> None:
        await self._maybe_reload_declarations()
        await self._maybe_reload_rules()
        await self._maybe_swap_models()

    async def _maybe_reload_declarations(self) -> None:
        """Swap in changed declarations of the served types, or refuse them and keep
        serving the ones in service."""
        if self._declarations is None:
            return
        change = self._declarations.poll()
        if change is None:
            return
        if change.unserved:
            log.warning(
                "declared types are not served: list them in ARBITER_EVENT_TYPES (or leave it "
                "unset) and restart — topics and the consumer's subscription are fixed at "
                "start-up",
                types=list(change.unserved),
            )
        if change.types is None:
            DECLARATIONS_RELOADS.labels(result="refused").inc()
            log.error(
                "declarations refused; the declarations in service keep serving",
                problems=list(change.problems),
            )
            return
        await self._processor.set_types(change.types)
        if self._on_types is not None:
            self._on_types(change.types)
        self._rules_watcher.set_vocabulary(*vocabulary(change.types))
        DECLARATIONS_RELOADS.labels(result="applied").inc()
        log.info("declarations reloaded", types=list(change.types.names))

    async def _maybe_reload_rules(self) -> None:
        """Swap in changed rule files, or refuse them and keep serving."""
        change = self._rules_watcher.poll()
        if change is None:
            return
        if change.rulesets is None:
            self._refused([str(p) for p in change.problems])
            return
        try:
            check_rule_webhooks(change.rulesets, self._endpoints)
        except ConfigError as exc:
            self._refused([str(exc)])
            return
        await self._ensure_topics(publish_topics(change.rulesets))
        await self._processor.swap_rules(change.rulesets)
        RULES_RELOADS.labels(result="applied").inc()
        if self._declarations is not None:
            self._declarations.retry_refused()
        self._note_serving()
        log.info(
            "rules reloaded",
            versions={name: rs.version for name, rs in sorted(change.rulesets.items())},
        )

    def _refused(self, problems: list[str]) -> None:
        RULES_RELOADS.labels(result="refused").inc()
        log.error(
            "rules change refused; the rules in service keep serving",
            rules_dir=str(self._rules_dir),
            problems=problems,
        )

    async def _maybe_swap_models(self) -> None:
        """Follow promotions, rollbacks and shadows in the registry."""
        if self._models_poll_s <= 0:
            return
        try:
            scorer = await self._models.poll(self._processor.scorer)
        except Exception as exc:  # the registry being unreachable must not stop deciding
            log.warning(
                "model registry check failed; the models in service keep serving", error=str(exc)
            )
            return
        if scorer is not None:
            self._processor.swap_scorer(scorer)
            self._note_serving()

    def _note_serving(self) -> None:
        """After start-up or a swap: the versions-in-service gauge and the batch line's
        ``models`` (champions), ``shadows`` (when any) and ``rulesets`` fields."""
        in_service = self._processor.scorer.in_service()
        set_versions_in_service(in_service)
        serving: dict[str, object] = {
            "models": {name: f"v{champion}" for name, (champion, _) in in_service.items()},
            "rulesets": {name: rs.version for name, rs in sorted(self._rules.rulesets.items())},
        }
        shadows = {n: [f"v{v}" for v in sh] for n, (_, sh) in in_service.items() if sh}
        if shadows:
            serving["shadows"] = shadows
        self.serving = serving
