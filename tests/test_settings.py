"""Settings in sections: environment names, arbiter.toml, keywords, and the names from
before the sections that keep working."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import LEGACY_NAMES, Settings, env_names, legacy_names_in


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ARBITER_* variable from the outside, and no arbiter.toml unless a test writes one."""
    import os

    for name in list(os.environ):
        if name.startswith("ARBITER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ARBITER_CONFIG_FILE", str(tmp_path / "arbiter.toml"))


def test_a_section_setting_comes_from_arbiter_section_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ARBITER_KAFKA_BOOTSTRAP is settings.kafka.bootstrap; a field with underscores
    (ARBITER_TRAINER_MIN_NEW) is not split further; top-level names stay flat."""
    monkeypatch.setenv("ARBITER_KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("ARBITER_TRAINER_MIN_NEW", "7")
    monkeypatch.setenv("ARBITER_HTTP_AUTH", "false")
    monkeypatch.setenv("ARBITER_DATA_DIR", "/srv/arbiter")
    s = Settings()
    assert s.kafka.bootstrap == "kafka:9092"
    assert s.trainer.min_new == 7
    assert s.http.auth is False
    assert s.data_dir == Path("/srv/arbiter")


def test_names_from_before_the_sections_keep_working_and_the_new_name_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ARBITER_API_AUTH still sets http.auth; with ARBITER_HTTP_AUTH also set, the new name
    decides; legacy_names_in says which new name to use."""
    monkeypatch.setenv("ARBITER_API_AUTH", "false")
    monkeypatch.setenv("ARBITER_TOPIC_PARTITIONS", "12")
    assert Settings().http.auth is False
    assert Settings().kafka.topic_partitions == 12
    monkeypatch.setenv("ARBITER_HTTP_AUTH", "true")
    assert Settings().http.auth is True
    import os

    assert legacy_names_in(os.environ) == [
        ("ARBITER_API_AUTH", "ARBITER_HTTP_AUTH"),
        ("ARBITER_TOPIC_PARTITIONS", "ARBITER_KAFKA_TOPIC_PARTITIONS"),
    ]


def test_every_legacy_name_maps_to_a_real_setting() -> None:
    """Each old name points at an existing field, and env_names() lists old and new."""
    names = env_names()
    for old, (section, field) in LEGACY_NAMES.items():
        new = f"ARBITER_{section}_{field}".upper()
        assert names[new] == new
        assert names[f"ARBITER_{old}".upper()] == new
    assert names["ARBITER_KAFKA_BOOTSTRAP"] == "ARBITER_KAFKA_BOOTSTRAP"
    assert names["ARBITER_SHUTDOWN_GRACE_S"] == "ARBITER_SHUTDOWN_GRACE_S"


def test_arbiter_toml_takes_section_tables_and_flat_names(tmp_path: Path) -> None:
    """``[kafka] bootstrap = ...`` and ``kafka_bootstrap = ...`` mean the same; a flat
    legacy key (``api_auth``) too."""
    (tmp_path / "arbiter.toml").write_text(
        'trainer_enabled = false\napi_auth = false\n[kafka]\nbootstrap = "k:1"\n'
    )
    s = Settings()
    assert (s.kafka.bootstrap, s.trainer.enabled, s.http.auth) == ("k:1", False, False)


def test_the_environment_beats_arbiter_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Sources, highest first: keywords, environment, arbiter.toml."""
    (tmp_path / "arbiter.toml").write_text("[http]\nport = 9000\nhost = '0.0.0.0'\n")
    monkeypatch.setenv("ARBITER_HTTP_PORT", "9100")
    s = Settings()
    assert (s.http.port, s.http.host) == (9100, "0.0.0.0")
    assert Settings(http_port=9200).http.port == 9200


def test_keywords_take_flat_or_nested_names() -> None:
    """Settings(trainer_enabled=False) and Settings(trainer={"enabled": False}) agree."""
    assert Settings(trainer_enabled=False) == Settings(trainer={"enabled": False})
    assert Settings(kafka_bootstrap="k:1", kafka={"topic_prefix": "p."}).kafka.topic_prefix == "p."


def test_an_unknown_or_invalid_setting_is_refused_with_its_place() -> None:
    """A typo in a section and an out-of-range value both fail validation, naming it."""
    with pytest.raises(ValidationError) as typo:
        Settings(kafka_bootstrapp="k:1")
    assert typo.value.errors()[0]["loc"] == ("kafka", "bootstrapp")
    with pytest.raises(ValidationError) as bad:
        Settings(batch_max=0)
    assert bad.value.errors()[0]["loc"] == ("batch", "max")


def test_replace_returns_a_validated_copy() -> None:
    """replace() merges into sections (other fields kept) and validates again."""
    s = Settings(http_port=8081)
    t = s.replace(http={"host": "0.0.0.0"}, trainer_min_new=5)
    assert (t.http.port, t.http.host, t.trainer.min_new) == (8081, "0.0.0.0", 5)
    assert s.http.host == "127.0.0.1"
    with pytest.raises(ValidationError):
        s.replace(http_port=-1)
