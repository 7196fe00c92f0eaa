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
the processes can say which new name to switch to. The sections themselves, every field
with its bounds and meaning, are in ``sections``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from app.settings.sections import (
    BatchSettings,
    DatabaseSettings,
    DriftSettings,
    HttpSettings,
    KafkaSettings,
    LogSettings,
    ModelsSettings,
    RulesSettings,
    SchemasSettings,
    Section,
    TrainerSettings,
    WebhooksSettings,
)

_REPO_ROOT = Path(__file__).resolve().parents[2]


def _default_connectors_file() -> Path:
    here = Path("connectors") / "connectors.yaml"
    return here if here.is_file() else _REPO_ROOT / "connectors" / "connectors.yaml"


TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def _declared_types(data: dict[str, Any]) -> tuple[str, ...]:
    """Every type declared in the schemas folder (one ``<type>.yaml`` each)."""
    folder = data["schemas"].dir if "schemas" in data else SchemasSettings().dir
    return tuple(sorted(p.stem for p in Path(folder).glob("*.yaml")))


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
    schemas: SchemasSettings = Field(default_factory=SchemasSettings)
    # After `schemas`: by default every type declared there is served.
    event_types: Annotated[tuple[str, ...], NoDecode] = Field(
        default_factory=_declared_types,
        description="The event types this process serves (comma-separated); by default "
        "every type declared in the schemas folder.",
    )
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
    def _declared(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        bad = [t for t in value if not TYPE_NAME.match(t)]
        if bad:
            raise ValueError(
                f"{', '.join(map(repr, bad))} cannot be an event type name: use lower case "
                "letters, digits and underscores, starting with a letter"
            )
        if not value:
            raise ValueError(
                "no event types: declare one in the schemas folder (ARBITER_SCHEMAS_DIR, "
                "docs/events.md), or name the ones to serve"
            )
        schemas = info.data.get("schemas")  # absent only when it failed validation
        if schemas is None:
            return value
        declared = _declared_types({"schemas": schemas})
        unknown = [t for t in value if t not in declared]
        if unknown:
            raise ValueError(
                f"unknown event type(s) {', '.join(unknown)}; declared types are "
                f"{', '.join(declared)} (in {schemas.dir}): declare each in "
                f"{schemas.dir}/<type>.yaml (docs/events.md), or leave it out"
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
    if isinstance(f.annotation, type) and issubclass(f.annotation, Section)
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
