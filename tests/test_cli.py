"""The ``arbiter`` command line, run as a real process.

Configuration mistakes are refused at start-up with one ``error:`` line that names the
thing and the fix, and exit status 2 — the consumer never starts on bad config. The
other commands (db upgrade, rules check, schemas export, simulate) are checked for what
an operator sees and what they leave behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from app.store import migrate
from connectors.broker import EmbeddedBroker
from tests.harness import ArbiterProcess, arbiter, read_topics

REPO = Path(__file__).resolve().parent.parent
UNREACHABLE_PG = "postgresql+asyncpg://postgres:secret@127.0.0.1:1/x"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A clean environment: no inherited ARBITER_* settings, data under tmp_path."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    return {
        **base,
        "ARBITER_DATA_DIR": str(tmp_path / "data"),
        "ARBITER_LOG_FORMAT": "json",
        "COLUMNS": "240",
    }


@pytest.fixture
def migrated(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """``env`` whose default SQLite ledger is already at the head revision."""
    db = tmp_path / "data" / "arbiter.db"
    db.parent.mkdir(parents=True)
    asyncio.run(migrate.upgrade(f"sqlite+aiosqlite:///{db}"))
    return env


def test_run_refuses_an_unreachable_database_without_showing_its_password(
    env: dict[str, str], tmp_path: Path
) -> None:
    """An unreachable PostgreSQL: exit 2, one line naming ARBITER_DATABASE_URL, no secret."""
    result = arbiter("run", env={**env, "ARBITER_DATABASE_URL": UNREACHABLE_PG}, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    [line] = error_lines(result.stderr)
    assert "cannot reach the database" in line
    assert "127.0.0.1:1" in line
    assert "ARBITER_DATABASE_URL" in line
    assert "secret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.sqlite
def test_run_refuses_an_unmigrated_sqlite_database_and_says_to_upgrade(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A fresh SQLite ledger: exit 2 telling the operator to run `arbiter db upgrade`."""
    result = arbiter("run", env=env, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    [line] = error_lines(result.stderr)
    assert "arbiter db upgrade" in line
    assert "Traceback" not in result.stderr


def _break_transaction_rules(rules_dir: Path) -> tuple[Path, int]:
    """Copy the shipped rules and misspell `amount` in transaction.yaml; return file, line."""
    shutil.copytree(REPO / "rules", rules_dir)
    path = rules_dir / "transaction.yaml"
    lines = path.read_text().splitlines(keepends=True)
    index = next(i for i, text in enumerate(lines) if "{field: amount," in text)
    lines[index] = lines[index].replace("{field: amount,", "{field: amout,")
    path.write_text("".join(lines))
    return path, index + 1


@pytest.mark.sqlite
def test_run_refuses_a_rule_file_with_an_unknown_field_naming_file_line_and_fix(
    migrated: dict[str, str], tmp_path: Path
) -> None:
    """A misspelt field in a rule: exit 2 with file:line and "did you mean 'amount'"."""
    path, line_no = _break_transaction_rules(tmp_path / "rules")

    result = arbiter("run", env={**migrated, "ARBITER_RULES_DIR": str(path.parent)}, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert len(error_lines(result.stderr)) == 1
    assert f"{path}:{line_no}" in result.stderr
    assert "did you mean 'amount'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.sqlite
def test_run_refuses_an_unreachable_kafka_naming_the_bootstrap_and_the_setting(
    migrated: dict[str, str], trained_models: Path, tmp_path: Path
) -> None:
    """Nothing listens at ARBITER_KAFKA_BOOTSTRAP: exit 2 naming it, rather than hanging."""
    env = {
        **migrated,
        "ARBITER_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "ARBITER_MODELS_DIR": str(trained_models),
    }

    result = arbiter("run", env=env, cwd=tmp_path, timeout=60)

    assert result.returncode == 2, result.stderr
    [line] = error_lines(result.stderr)
    assert "127.0.0.1:1" in line
    assert "ARBITER_KAFKA_BOOTSTRAP" in line
    assert "Traceback" not in result.stderr


def test_run_refuses_an_unknown_event_type_listing_the_known_ones(
    env: dict[str, str], tmp_path: Path
) -> None:
    """ARBITER_EVENT_TYPES=order,refund: exit 2 naming 'refund' and the known types."""
    result = arbiter("run", env={**env, "ARBITER_EVENT_TYPES": "order,refund"}, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    [line] = error_lines(result.stderr)
    assert "ARBITER_EVENT_TYPES" in line
    assert "refund" in line
    assert "order, ticket, transaction" in line
    assert "Traceback" not in result.stderr


def test_error_lines_print_square_brackets_verbatim(env: dict[str, str], tmp_path: Path) -> None:
    """A value in square brackets is echoed as given, not swallowed as console markup."""
    result = arbiter(
        "db", "upgrade", env={**env, "ARBITER_EVENT_TYPES": "order,[refund]"}, cwd=tmp_path
    )

    assert result.returncode == 2, result.stderr
    assert "[refund]" in result.stderr


@pytest.mark.sqlite
def test_db_upgrade_creates_a_fresh_sqlite_ledger_and_can_run_twice(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`arbiter db upgrade` creates <data_dir>/arbiter.db at the head; a rerun changes nothing."""
    head = migrate.head_revision()

    first = arbiter("db", "upgrade", env=env, cwd=tmp_path)
    second = arbiter("db", "upgrade", env=env, cwd=tmp_path)

    assert first.returncode == 0, first.stderr
    assert (tmp_path / "data" / "arbiter.db").is_file()
    assert f"database is at revision {head}" in first.stdout
    assert second.returncode == 0, second.stderr
    assert f"database is at revision {head}" in second.stdout


@pytest.mark.postgres
def test_db_upgrade_migrates_an_empty_postgres_database_and_can_run_twice(
    env: dict[str, str], pg_url: str, tmp_path: Path
) -> None:
    """`arbiter db upgrade` against PostgreSQL reaches the head revision, twice over."""
    head = migrate.head_revision()
    env = {**env, "ARBITER_DATABASE_URL": pg_url}

    first = arbiter("db", "upgrade", env=env, cwd=tmp_path)
    second = arbiter("db", "upgrade", env=env, cwd=tmp_path)

    assert first.returncode == 0, first.stderr
    assert f"database is at revision {head}" in first.stdout
    assert second.returncode == 0, second.stderr
    assert f"database is at revision {head}" in second.stdout
    assert not (tmp_path / "data" / "arbiter.db").exists()


def test_rules_check_accepts_the_shipped_rules_and_lists_each_ruleset(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`arbiter rules check` exits 0 on rules/ and prints one line per ruleset."""
    result = arbiter("rules", "check", "--dir", str(REPO / "rules"), env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    for name in ("order", "ticket", "transaction"):
        assert f"✓ {name}:" in result.stdout


def test_rules_check_reports_every_problem_with_file_and_line_and_exits_1(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Two broken files: exit 1 and one ✗ line per problem, each with file:line."""
    rules_dir = tmp_path / "rules"
    bad_field, field_line = _break_transaction_rules(rules_dir)
    order = rules_dir / "order.yaml"
    order_lines = order.read_text().splitlines(keepends=True)
    index = next(i for i, text in enumerate(order_lines) if text.lstrip().startswith("decision:"))
    order_lines[index] = order_lines[index].replace("decision:", "decison:")
    order.write_text("".join(order_lines))

    result = arbiter("rules", "check", "--dir", str(rules_dir), env=env, cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("✗")]
    assert len(problems) >= 2, result.stderr
    assert any(f"{bad_field}:{field_line}" in p and "'amount'" in p for p in problems)
    assert any(f"{order}:{index + 1}" in p and "decison" in p for p in problems), result.stderr
    assert "✓" not in result.stdout


def test_schemas_export_writes_a_json_schema_per_contract(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`arbiter schemas export DIR` writes parseable *.schema.json for every contract."""
    out = tmp_path / "schemas"

    result = arbiter("schemas", "export", str(out), env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    for name in ("order", "ticket", "transaction", "outcome", "decision"):
        schema = json.loads((out / f"{name}.schema.json").read_text())
        assert isinstance(schema, dict)
        assert schema.get("properties"), name
    ticket = json.loads((out / "ticket.schema.json").read_text())
    assert ticket["properties"]["body"]["maxLength"] == 10_000  # from schemas/ticket.yaml


@pytest.mark.kafka
async def test_simulate_sends_the_requested_number_of_events(
    broker: EmbeddedBroker, env: dict[str, str], tmp_path: Path
) -> None:
    """`arbiter simulate --events 200` exits 0 and events.* then hold 200 records."""
    result = await asyncio.to_thread(
        arbiter,
        "simulate",
        "--bootstrap",
        broker.bootstrap,
        "--events",
        "200",
        env=env,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert "sent 200 events" in result.stdout
    topics = [f"events.{t}" for t in ("order", "ticket", "transaction")]
    got = await read_topics(broker.bootstrap, topics, until=200, timeout=30, settle=1.0)
    assert sum(len(records) for records in got.values()) == 200


@pytest.mark.kafka
@pytest.mark.sqlite
async def test_run_stops_cleanly_on_sigterm_while_idle(
    broker: EmbeddedBroker, migrated: dict[str, str], trained_models: Path, tmp_path: Path
) -> None:
    """SIGTERM to an idle `arbiter run`: exit 0 and a "stopped cleanly" log line."""
    env = {
        **migrated,
        "ARBITER_KAFKA_BOOTSTRAP": broker.bootstrap,
        "ARBITER_MODELS_DIR": str(trained_models),
    }
    proc = ArbiterProcess(tmp_path / "arbiter.log", env).start()
    try:
        await proc.wait_for_log("consuming", timeout=60)
        code = await asyncio.to_thread(proc.terminate, 30)
    finally:
        proc.ensure_stopped()

    assert code == 0, proc.log_path.read_text()
    assert any(e.get("event") == "stopped cleanly" for e in proc.log_lines())
    assert "Traceback" not in proc.log_path.read_text()
