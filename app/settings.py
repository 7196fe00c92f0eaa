"""Settings: one pydantic-settings object in sections, built in the composition root, never
at import.

Sources, highest first: keyword arguments (tests), ``ARBITER_*`` environment variables,
an optional ``arbiter.toml`` in the working directory (or ``ARBITER_CONFIG_FILE``), then
the embedded defaults below. With nothing set, Arbiter starts its own broker and uses a
SQLite file under ``data/``.

Names: a setting of a section is ``ARBITER_<SECTION>_<FIELD>`` in the environment
(``ARBITER_KAFKA_BOOTSTRAP`` is ``settings.kafka.bootstrap``), ``<section>_<field>`` or
``[section] field`` in ``arbiter.toml``, and either spelling as a keyword argument.
A few settings had names before the sections existed that do not start with their
section (``ARBITER_API_AUTH`` is now ``ARBITER_HTTP_AUTH``): ``LEGACY_NAMES`` maps them,
they keep working, and ``legacy_names_in`` lists the ones an environment still uses so
the processes can say which new name to switch to.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
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


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
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


class BatchSettings(_Section):
    """How many records one batch takes, and how long a fetch waits (``ARBITER_BATCH_*``)."""

    max: int = Field(default=500, ge=1, le=100_000)
    wait_ms: int = Field(default=50, ge=0, le=60_000)


class DatabaseSettings(_Section):
    """The decision ledger database (``ARBITER_DATABASE_*``)."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL; unset uses SQLite at <data_dir>/arbiter.db.",
    )
    auto_migrate: bool = Field(
        default=False, description="Apply database migrations at start-up (demo, dev)."
    )


class RulesSettings(_Section):
    """The rule files and their hot reload (``ARBITER_RULES_*``)."""

    dir: Path = Field(default_factory=_default_rules_dir)
    reload_s: float = Field(
        default=2.0,
        ge=0,
        description="How often a running consumer looks for rule changes; 0 = never.",
    )


class ModelsSettings(_Section):
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


class TrainerSettings(_Section):
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
        description="A challenger is promoted only when its ROC-AUC (tabular) or macro-F1 "
        "(ticket heads) beats the champion's by at least this on the same holdout.",
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


class DriftSettings(_Section):
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


class HttpSettings(_Section):
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


class WebhooksSettings(_Section):
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


class LogSettings(_Section):
    """Structured logs (``ARBITER_LOG_*``)."""

    format: Literal["auto", "json", "console"] = "auto"
    level: str = "info"


class Settings(BaseSettings):
    """Everything Arbiter can be told, in sections; see the module docstring for the names."""

    model_config = SettingsConfigDict(
        env_prefix="ARBITER_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Path("data")
    max_event_bytes: int = Field(default=64 * 1024, ge=1024)
    event_types: Annotated[tuple[str, ...], NoDecode] = EVENT_TYPES
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
    connectors_file: Path = Field(
        default_factory=_default_connectors_file,
        description="The webhook endpoints file (secrets come from the environment).",
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    webhooks: WebhooksSettings = Field(default_factory=WebhooksSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @model_validator(mode="before")
    @classmethod
    def _fold_flat_names(cls, data: Any) -> Any:
        """``kafka_bootstrap=...`` (a keyword, a flat TOML key) means ``kafka.bootstrap``."""
        return fold_flat_names(data) if isinstance(data, Mapping) else data

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
            _Folded(settings_cls, init_settings),
            env_settings,
            _LegacyEnv(settings_cls),
            _Folded(settings_cls, TomlConfigSettingsSource(settings_cls, toml_file=toml_file)),
        )

    # Derived values — one place that knows the naming conventions.

    def topic(
        self, kind: Literal["events", "decisions", "outcomes", "dlq"], event_type: str
    ) -> str:
        return f"{self.kafka.topic_prefix}{kind}.{event_type}"

    @property
    def resolved_database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'arbiter.db').resolve()}"

    @property
    def resolved_models_dir(self) -> Path:
        return self.models.dir or self.data_dir / "models"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (flat or nested names, as the constructor takes them),
        validated again."""
        merged = self.model_dump()
        for section, fields in fold_flat_names(changes).items():
            if section in SECTIONS and isinstance(fields, Mapping):
                merged[section] = {**merged[section], **fields}
            else:
                merged[section] = fields
        return type(self).model_validate(merged)


SECTION_MODELS: dict[str, type[BaseModel]] = {
    name: f.annotation
    for name, f in Settings.model_fields.items()
    if isinstance(f.annotation, type) and issubclass(f.annotation, _Section)
}
SECTIONS: frozenset[str] = frozenset(SECTION_MODELS)
TOP_LEVEL: frozenset[str] = frozenset(Settings.model_fields) - SECTIONS

# Names from before the sections whose first word is not their section.
LEGACY_NAMES: dict[str, tuple[str, str]] = {
    "topic_partitions": ("kafka", "topic_partitions"),
    "topic_prefix": ("kafka", "topic_prefix"),
    "consumer_group": ("kafka", "consumer_group"),
    "session_timeout_ms": ("kafka", "session_timeout_ms"),
    "heartbeat_interval_ms": ("kafka", "heartbeat_interval_ms"),
    "auto_migrate": ("database", "auto_migrate"),
    "history_replay_h": ("models", "history_replay_h"),
    "text_threads": ("models", "text_threads"),
    "api_auth": ("http", "auth"),
    "api_key_cache_s": ("http", "key_cache_s"),
    "webhook_poll_s": ("webhooks", "poll_s"),
    "webhook_batch": ("webhooks", "batch"),
    "webhook_concurrency": ("webhooks", "concurrency"),
    "webhook_lease_s": ("webhooks", "lease_s"),
    "webhook_backoff_base_s": ("webhooks", "backoff_base_s"),
    "webhook_backoff_cap_s": ("webhooks", "backoff_cap_s"),
}


def _section_of(name: str) -> tuple[str, str] | None:
    """Where a flat name lives: (section, field), or None for a top-level name."""
    if name in TOP_LEVEL or name in SECTIONS:
        return None
    if name in LEGACY_NAMES:
        return LEGACY_NAMES[name]
    section, _, field = name.partition("_")
    return (section, field) if section in SECTIONS and field else None


def fold_flat_names(data: Mapping[str, Any]) -> dict[str, Any]:
    """``{"kafka_bootstrap": x, "trainer": {...}}`` → ``{"kafka": {"bootstrap": x}, ...}``;
    within one source a flat name wins over the same setting given nested."""
    out: dict[str, Any] = {}
    flat: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        place = _section_of(key)
        if place is None:
            out[key] = value
        else:
            flat.setdefault(place[0], {})[place[1]] = value
    for section, fields in flat.items():
        given = out.get(section)
        if isinstance(given, BaseModel):
            given = given.model_dump()
        out[section] = {**(given if isinstance(given, Mapping) else {}), **fields}
    return out


def env_name(section: str | None, field: str) -> str:
    """The environment variable of a setting: ``env_name("kafka", "bootstrap")`` →
    ``ARBITER_KAFKA_BOOTSTRAP``."""
    return f"ARBITER_{section}_{field}".upper() if section else f"ARBITER_{field}".upper()


def env_names() -> dict[str, str]:
    """Every environment variable a setting answers to → its current name (the legacy
    names map to their new one)."""
    names = {env_name(None, n): env_name(None, n) for n in TOP_LEVEL}
    for section, model in SECTION_MODELS.items():
        for field in model.model_fields:
            names[env_name(section, field)] = env_name(section, field)
    for old, (section, field) in LEGACY_NAMES.items():
        names[env_name(None, old)] = env_name(section, field)
    return names


def legacy_names_in(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """(old name, new name) for each legacy variable ``environ`` sets."""
    upper = {k.upper() for k in environ}
    return [
        (env_name(None, old), env_name(*place))
        for old, place in sorted(LEGACY_NAMES.items())
        if env_name(None, old) in upper
    ]


class _Folded(PydanticBaseSettingsSource):
    """Another source's values with flat names folded into their sections."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self._inner = inner

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        return fold_flat_names(self._inner())


class _LegacyEnv(PydanticBaseSettingsSource):
    """The legacy environment names, below the current ones (a current name wins)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        environ = {k.upper(): v for k, v in os.environ.items()}
        out: dict[str, dict[str, Any]] = {}
        for old, (section, field) in LEGACY_NAMES.items():
            value = environ.get(env_name(None, old))
            if value is not None:
                out.setdefault(section, {})[field] = value
        return out
