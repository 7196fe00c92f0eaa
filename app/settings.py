"""Settings: one pydantic-settings object, built in the composition root, never at import.

Sources, highest first: keyword arguments (tests), ``ARBITER_*`` environment variables,
an optional ``arbiter.toml`` in the working directory (or ``ARBITER_CONFIG_FILE``), then
the embedded defaults below. With nothing set, Arbiter starts its own broker and uses a
SQLite file under ``data/``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

EVENT_TYPES: tuple[str, ...] = ("order", "ticket", "transaction")

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_rules_dir() -> Path:
    here = Path("rules")
    return here if here.is_dir() else _REPO_ROOT / "rules"


def _default_connectors_file() -> Path:
    here = Path("connectors") / "connectors.yaml"
    return here if here.is_file() else _REPO_ROOT / "connectors" / "connectors.yaml"


class Settings(BaseSettings):
    """Everything Arbiter can be told; every field maps to ``ARBITER_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="ARBITER_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    kafka_bootstrap: str | None = Field(
        default=None,
        description="host:port[,host:port]; unset starts the embedded Tansu broker.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL; unset uses SQLite at <data_dir>/arbiter.db.",
    )
    rules_dir: Path = Field(default_factory=_default_rules_dir)
    data_dir: Path = Path("data")
    models_dir: Path | None = Field(
        default=None, description="Model artifacts; unset uses <data_dir>/models."
    )
    topic_partitions: int = Field(default=4, ge=1, le=1024)
    topic_prefix: str = Field(
        default="",
        description="Prepended to every topic name (namespacing on a shared cluster).",
    )
    batch_max: int = Field(default=500, ge=1, le=100_000)
    batch_wait_ms: int = Field(default=50, ge=0, le=60_000)
    max_event_bytes: int = Field(default=64 * 1024, ge=1024)
    consumer_group: str = "arbiter"
    event_types: Annotated[tuple[str, ...], NoDecode] = EVENT_TYPES
    rules_reload_s: float = Field(
        default=2.0,
        ge=0,
        description="How often a running consumer looks for rule changes; 0 = never.",
    )
    models_poll_s: float = Field(
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
    trainer_enabled: bool = Field(
        default=True,
        description="Run the background trainer inside `arbiter run` (off when a separate "
        "`arbiter trainer` process does it).",
    )
    trainer_poll_s: float = Field(
        default=30.0, gt=0, description="How often the trainer looks for a reason to train."
    )
    trainer_min_new: int = Field(
        default=2_000,
        ge=1,
        description="Train a model when this many new labelled outcomes arrived since its "
        "last training run.",
    )
    trainer_every_h: float = Field(
        default=0.0, ge=0, description="Also train on a schedule, every this many hours; 0 = off."
    )
    trainer_budget_s: float = Field(
        default=60.0, gt=0, description="Time budget of the hyper-parameter search per model."
    )
    trainer_margin: float = Field(
        default=0.005,
        ge=0,
        description="A challenger is promoted only when its ROC-AUC (tabular) or macro-F1 "
        "(ticket heads) beats the champion's by at least this on the same holdout.",
    )
    trainer_review_rate: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="The business metric: share of events reviewed (fraud caught at it).",
    )
    trainer_max_rows: int = Field(
        default=200_000, ge=100, description="Train on at most this many newest examples."
    )
    trainer_half_life_days: float = Field(
        default=30.0,
        ge=0,
        description="Recency weighting of training examples (older count less); 0 = off.",
    )
    trainer_threads: int = Field(
        default=1, ge=1, le=64, description="CPU threads the training process may use."
    )
    trainer_lease_s: float = Field(
        default=300.0,
        ge=3,
        le=86_400,
        description="How long the `trainer` lease (one trainer at a time across processes) "
        "lasts without renewal; its holder renews it every third of this. A trainer that died "
        "without letting go (killed, its host lost) is replaced after at most this long.",
    )
    trainer_shadow_kept: bool = Field(
        default=False,
        description="Put a challenger that was not promoted in shadow beside the champion.",
    )
    drift_window: int = Field(
        default=2_000, ge=50, description="Recent decisions per model the drift monitor reads."
    )
    drift_psi_threshold: float = Field(
        default=0.25,
        gt=0,
        description="Population stability index (worst feature or the score) that triggers "
        "retraining.",
    )
    drift_auc_drop: float = Field(
        default=0.05,
        gt=0,
        description="A drop of the champion's ROC-AUC on recent outcomes (vs its holdout) "
        "that triggers retraining.",
    )
    drift_min_new: int = Field(
        default=300,
        ge=1,
        description="New labelled outcomes a drift-triggered retrain needs at least.",
    )
    auto_migrate: bool = Field(
        default=False, description="Apply database migrations at start-up (demo, dev)."
    )
    shutdown_grace_s: float = Field(
        default=25.0,
        gt=0,
        le=3_600,
        description="How long `arbiter run` (and `arbiter trainer`) may take to stop after "
        "SIGTERM/SIGINT. /readyz turns 503 at once; the consumer finishes the batch in hand, "
        "commits its offsets and leaves the group; the webhook relay finishes the deliveries "
        "in flight (or hands them back unsent); the HTTP API finishes its requests last. "
        "Whatever still runs when the grace is over is cut off and named in the log, and the "
        "process exits with status 3 instead of 0 (at the latest 3 s after the grace). Keep "
        "it below the orchestrator's kill timeout (Kubernetes' "
        "terminationGracePeriodSeconds, 30 s by default; compose's stop_grace_period).",
    )
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    # The HTTP API (connectors/http), served by `arbiter run` in the consumer's event loop.
    http_enabled: bool = Field(default=True, description="Serve the HTTP API in `arbiter run`.")
    http_host: str = Field(default="127.0.0.1", description="Interface the HTTP API binds to.")
    http_port: int = Field(
        default=8080, ge=0, le=65535, description="HTTP API port; 0 picks a free one (tests)."
    )
    http_max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body the API reads; a larger one gets 413 while it is "
        "still arriving.",
    )
    http_max_batch: int = Field(
        default=1_000, ge=1, le=100_000, description="Most events or outcomes in one request."
    )
    http_rate_per_s: float = Field(
        default=200.0, gt=0, description="Requests per second each API key may make (sustained)."
    )
    http_rate_burst: int = Field(
        default=400, ge=1, description="Requests an API key may make at once before 429s."
    )
    api_auth: bool = Field(
        default=True,
        description="Require API keys (`arbiter keys create`); false opens the API to anyone "
        "who can reach it (local demos only — /readyz and the log say so).",
    )
    api_key_cache_s: float = Field(
        default=5.0,
        ge=0,
        description="How long API keys are cached in memory: a revocation takes effect "
        "within this time.",
    )
    # Webhooks (app/outbox): endpoints in the connectors file, sent by the outbox relay.
    connectors_file: Path = Field(
        default_factory=_default_connectors_file,
        description="The webhook endpoints file (secrets come from the environment).",
    )
    webhooks_enabled: bool = Field(
        default=True,
        description="Run the webhook relay inside `arbiter run` (deliveries are stored in the "
        "outbox either way; any process with the relay on sends them).",
    )
    webhook_poll_s: float = Field(
        default=0.5, gt=0, description="How often an idle relay looks for due deliveries."
    )
    webhook_batch: int = Field(
        default=100, ge=1, le=10_000, description="Deliveries the relay leases per round."
    )
    webhook_concurrency: int = Field(
        default=16, ge=1, le=1_000, description="Requests the relay has in flight at once."
    )
    webhook_lease_s: float = Field(
        default=60.0,
        gt=0,
        description="How long a leased delivery is the relay's alone; after a crash, the rows "
        "come back this long after the claim. Keep it above every endpoint's timeout_s.",
    )
    webhook_backoff_base_s: float = Field(
        default=1.0, gt=0, description="First retry waits up to this long (full jitter)."
    )
    webhook_backoff_cap_s: float = Field(
        default=300.0, gt=0, description="No retry waits longer than this (unless Retry-After)."
    )

    @field_validator("event_types", mode="before")
    @classmethod
    def _split_types(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [t for t in value if t not in EVENT_TYPES]
        if unknown:
            raise ValueError(
                f"unknown event type(s) {', '.join(unknown)}; "
                f"known types are {', '.join(EVENT_TYPES)}"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("ARBITER_CONFIG_FILE", "arbiter.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )

    # Derived values — one place that knows the naming conventions.

    def topic(
        self, kind: Literal["events", "decisions", "outcomes", "dlq"], event_type: str
    ) -> str:
        return f"{self.topic_prefix}{kind}.{event_type}"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'arbiter.db').resolve()}"

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"
