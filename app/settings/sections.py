"""The sections of ``Settings``: one model per section, each field a setting with its
bounds and what it does (``ARBITER_<SECTION>_<FIELD>`` in the environment)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_REPO_ROOT = Path(__file__).resolve().parents[2]


def _default_rules_dir() -> Path:
    here = Path("rules")
    return here if here.is_dir() else _REPO_ROOT / "rules"


def _default_schemas_dir() -> Path:
    here = Path("schemas")
    return here if here.is_dir() else _REPO_ROOT / "schemas"


class Section(BaseModel):
    """A section: its fields are fixed (a typo is refused) and it never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(Section):
    """The Kafka cluster, topics and the consumer group (``ARBITER_KAFKA_*``)."""

    bootstrap: str | None = Field(
        default=None,
        description="host:port[,host:port]; unset starts the embedded Tansu broker.",
    )
    topic_partitions: int = Field(default=4, ge=1, le=1024)
    topic_prefix: str = Field(
        default="",
        description="Prepended to every topic name (namespacing on a shared cluster).",
    )
    consumer_group: str = "arbiter"
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=1_000, ge=100)


class BatchSettings(Section):
    """How many records one batch takes, and how long a fetch waits (``ARBITER_BATCH_*``)."""

    max: int = Field(default=500, ge=1, le=100_000)
    wait_ms: int = Field(default=50, ge=0, le=60_000)


class DatabaseSettings(Section):
    """The decision ledger database (``ARBITER_DATABASE_*``)."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL; unset uses SQLite at <data_dir>/arbiter.db.",
    )
    auto_migrate: bool = Field(
        default=False, description="Apply database migrations at start-up (demo, dev)."
    )


class RulesSettings(Section):
    """The rule files and their hot reload (``ARBITER_RULES_*``)."""

    dir: Path = Field(default_factory=_default_rules_dir)
    reload_s: float = Field(
        default=2.0,
        ge=0,
        description="How often a running consumer looks for rule changes; 0 = never.",
    )


class SchemasSettings(Section):
    """The event type declarations (``ARBITER_SCHEMAS_*``)."""

    dir: Path = Field(
        default_factory=_default_schemas_dir,
        description="The folder of event type declarations (*.yaml, docs/events.md).",
    )
    max_attributes: int = Field(
        default=50,
        ge=0,
        le=10_000,
        description="How many keys an event's free `attributes` mapping may hold (types "
        "declared with `attributes: true`); declare values you rely on as fields instead.",
    )
    max_attribute_chars: int = Field(
        default=256,
        ge=1,
        le=65_536,
        description="The longest text value in an event's `attributes`.",
    )
    reload_s: float = Field(
        default=2.0,
        ge=0,
        description="How often a running consumer looks for changed declarations of the "
        "types it serves; 0 = never.",
    )


class ModelsSettings(Section):
    """Model artifacts and how the service follows the registry (``ARBITER_MODELS_*``)."""

    dir: Path | None = Field(
        default=None, description="Model artifacts; unset uses <data_dir>/models."
    )
    poll_s: float = Field(
        default=2.0,
        ge=0,
        description="How often a running consumer checks the registry for promotions, "
        "rollbacks and shadows; 0 = never.",
    )
    history_replay_h: float = Field(
        default=24.0,
        ge=0,
        description="At start-up, replay this many hours of decided events (before the "
        "newest) into the customer feature history; 0 = start with none.",
    )
    text_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="CPU threads the text encoder may use; the rest stay with the tabular "
        "models, the rules and the event loop.",
    )


class TrainerSettings(Section):
    """The background trainer (``ARBITER_TRAINER_*``)."""

    enabled: bool = Field(
        default=True,
        description="Run the background trainer inside `arbiter run` (off when a separate "
        "`arbiter trainer` process does it).",
    )
    poll_s: float = Field(
        default=30.0, gt=0, description="How often the trainer looks for a reason to train."
    )
    min_new: int = Field(
        default=2_000,
        ge=1,
        description="Train a model when this many new labelled outcomes arrived since its "
        "last training run.",
    )
    every_h: float = Field(
        default=0.0, ge=0, description="Also train on a schedule, every this many hours; 0 = off."
    )
    budget_s: float = Field(
        default=60.0, gt=0, description="Time budget of the hyper-parameter search per model."
    )
    margin: float = Field(
        default=0.005,
        ge=0,
        description="A yes/no challenger is promoted only when it beats the champion by at "
        "least this on ROC-AUC or on log loss and is worse by more on neither; a text head "
        "when its macro-F1 does; on the same holdout.",
    )
    review_rate: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="The business metric: share of events reviewed (fraud caught at it).",
    )
    max_rows: int = Field(
        default=200_000, ge=100, description="Train on at most this many newest examples."
    )
    half_life_days: float = Field(
        default=30.0,
        ge=0,
        description="Recency weighting of training examples (older count less); 0 = off.",
    )
    threads: int = Field(
        default=1, ge=1, le=64, description="CPU threads the training process may use."
    )
    lease_s: float = Field(
        default=300.0,
        ge=3,
        le=86_400,
        description="How long the `trainer` lease (one trainer at a time across processes) "
        "lasts without renewal; its holder renews it every third of this. A trainer that died "
        "without letting go (killed, its host lost) is replaced after at most this long.",
    )
    shadow_kept: bool = Field(
        default=False,
        description="Put a challenger that was not promoted in shadow beside the champion.",
    )


class DriftSettings(Section):
    """When drift of a model in service triggers a retrain (``ARBITER_DRIFT_*``)."""

    window: int = Field(
        default=2_000, ge=50, description="Recent decisions per model the drift monitor reads."
    )
    psi_threshold: float = Field(
        default=0.25,
        gt=0,
        description="Population stability index (worst feature or the score) that triggers "
        "retraining.",
    )
    auc_drop: float = Field(
        default=0.05,
        gt=0,
        description="A drop of the champion's ROC-AUC on recent outcomes (vs its holdout) "
        "that triggers retraining.",
    )
    min_new: int = Field(
        default=300,
        ge=1,
        description="New labelled outcomes a drift-triggered retrain needs at least.",
    )


class HttpSettings(Section):
    """The HTTP API served by ``arbiter run`` (``ARBITER_HTTP_*``)."""

    enabled: bool = Field(default=True, description="Serve the HTTP API in `arbiter run`.")
    host: str = Field(default="127.0.0.1", description="Interface the HTTP API binds to.")
    port: int = Field(
        default=8080, ge=0, le=65535, description="HTTP API port; 0 picks a free one (tests)."
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body the API reads; a larger one gets 413 while it is "
        "still arriving.",
    )
    max_batch: int = Field(
        default=1_000, ge=1, le=100_000, description="Most events or outcomes in one request."
    )
    rate_per_s: float = Field(
        default=200.0, gt=0, description="Requests per second each API key may make (sustained)."
    )
    rate_burst: int = Field(
        default=400, ge=1, description="Requests an API key may make at once before 429s."
    )
    auth: bool = Field(
        default=True,
        description="Require API keys (`arbiter keys create`); false opens the API to anyone "
        "who can reach it (local demos only — /readyz and the log say so).",
    )
    key_cache_s: float = Field(
        default=5.0,
        ge=0,
        description="How long API keys are cached in memory: a revocation takes effect "
        "within this time.",
    )


class WebhooksSettings(Section):
    """The webhook outbox relay (``ARBITER_WEBHOOKS_*``); endpoints are in the connectors file."""

    enabled: bool = Field(
        default=True,
        description="Run the webhook relay inside `arbiter run` (deliveries are stored in the "
        "outbox either way; any process with the relay on sends them).",
    )
    poll_s: float = Field(
        default=0.5, gt=0, description="How often an idle relay looks for due deliveries."
    )
    batch: int = Field(
        default=100, ge=1, le=10_000, description="Deliveries the relay leases per round."
    )
    concurrency: int = Field(
        default=16, ge=1, le=1_000, description="Requests the relay has in flight at once."
    )
    lease_s: float = Field(
        default=60.0,
        gt=0,
        description="How long a leased delivery is the relay's alone; after a crash, the rows "
        "come back this long after the claim. Keep it above every endpoint's timeout_s.",
    )
    backoff_base_s: float = Field(
        default=1.0, gt=0, description="First retry waits up to this long (full jitter)."
    )
    backoff_cap_s: float = Field(
        default=300.0, gt=0, description="No retry waits longer than this (unless Retry-After)."
    )


class LogSettings(Section):
    """Structured logs (``ARBITER_LOG_*``)."""

    format: Literal["auto", "json", "console"] = "auto"
    level: str = "info"
