"""``arbiter import``: history (past events with their labels) from CSV, Parquet, JSON
Lines or a SQL table into the store, marked as imported; rejects, re-imports, mapping
and the times given to rows without one. docs/import.md."""

from __future__ import annotations

import csv
import json
import os
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import ConfigError
from app.ops.import_rows import dotted_columns
from app.ops.importer import ImportRequest, ImportSummary, import_history
from app.simulator.generate import labelled_events
from app.simulator.shapes import EVENT_MODELS
from app.store import Ledger, create_engine
from app.store.outcomes import OutcomeStore
from app.store.tables import decisions
from app.trainer.jobs.dataset import build_examples
from app.values import DecisionRecord
from tests.conftest import PG_ADMIN_URL
from tests.harness import arbiter
from tests.shipped import CATALOG

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def transactions(n: int, seed: int = 3) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``n`` simulator transactions as payloads, and their labels."""
    events, labels = labelled_events("transaction", n, seed=seed)
    return [e.model_dump(mode="json") for e in events], [dict(x) for x in labels]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
    return path


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


def write_file(kind: str, path: Path, payloads: list[dict[str, Any]], labels: list[dict[str, Any]]):
    """The labelled payloads as a ``kind`` file: CSV flat with dotted columns, Parquet
    with nested structs and real timestamps, JSON Lines as the payloads are."""
    rows = [p | lab for p, lab in zip(payloads, labels, strict=True)]
    if kind == "csv":
        return write_csv(path.with_suffix(".csv"), [dotted_columns(r) for r in rows])
    if kind == "parquet":
        for r in rows:
            r["occurred_at"] = datetime.fromisoformat(r["occurred_at"])
        out = path.with_suffix(".parquet")
        pq.write_table(pa.Table.from_pylist(rows), out)
        return out
    out = path.with_suffix(".jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


async def run_import(
    db_url: str,
    *files: Path,
    event_type: str = "transaction",
    schemas_dir: Path = SCHEMAS,
    **request: Any,
) -> ImportSummary:
    return await import_history(
        ImportRequest(event_type, tuple(files), **request),
        database_url=db_url,
        schemas_dir=schemas_dir,
        now=NOW,
    )


async def stored(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            (await conn.execute(sa.select(decisions).order_by(decisions.c.event_id))).mappings()
        )


# --- files of labelled transactions, on both backends ------------------------------


@pytest.mark.parametrize("kind", ["csv", "parquet", "jsonl"])
async def test_labelled_transactions_from_a_file_are_imported_and_the_trainer_reads_them(
    kind: str, db_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    """Every row is stored once, as imported (not decided), its payload as a decided
    event's would be; its label is an outcome, and ``OutcomeStore.labelled`` (the
    trainer's dataset) returns each event with it."""
    payloads, labels = transactions(300)
    path = write_file(kind, tmp_path / "history", payloads, labels)

    summary = await run_import(db_url, path)

    assert (summary.rows_read, summary.imported, summary.already_present) == (300, 300, 0)
    assert summary.rejected_total == 0
    assert summary.outcomes_written == 300
    assert not summary.rejects_path or not summary.rejects_path.exists()
    labelled = await OutcomeStore(engine).labelled("transaction")
    assert [x.event_id for x in labelled] == [p["event_id"] for p in payloads]
    assert [x.labels for x in labelled] == labels
    model = EVENT_MODELS["transaction"]
    for x, payload in zip(labelled, payloads, strict=True):
        assert x.payload == model.model_validate(payload).model_dump(mode="json")
        assert x.occurred_at == datetime.fromisoformat(payload["occurred_at"])
    examples, cleaning = build_examples(CATALOG["transaction.fraud"], labelled)  # the trainer's
    assert (cleaning.kept, cleaning.invalid_payload) == (300, 0)
    assert [e.target for e in examples] == [lab["fraud"] for lab in labels]
    rows = await stored(engine)
    assert {(r["origin"], r["decision"]) for r in rows} == {("imported", "imported")}
    assert all(r["published_at"] is not None for r in rows)  # the sweeper never sends them
    assert rows[0]["source_topic"] == f"import/{summary.run}/{path.name}"
    ledger = Ledger(engine)
    assert await ledger.count_imported() == 300
    assert await ledger.count_decisions() == 0
    assert await ledger.decision_counts() == {}


async def test_importing_the_same_file_again_adds_nothing(
    db_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    payloads, labels = transactions(200)
    path = write_file("csv", tmp_path / "history", payloads, labels)
    first = await run_import(db_url, path)
    before = await stored(engine)

    again = await run_import(db_url, path)

    assert (first.imported, first.outcomes_written) == (200, 200)
    assert (again.rows_read, again.imported, again.already_present) == (200, 0, 200)
    assert (again.outcomes_written, again.outcomes_present, again.rejected_total) == (0, 200, 0)
    assert await stored(engine) == before
    assert len(await OutcomeStore(engine).labelled("transaction")) == 200
    assert any(x.startswith("already present") and " 200 " in x for x in again.lines())


# --- a SQL table ---------------------------------------------------------------------


async def test_rows_of_a_sql_table_are_imported_with_their_labels(
    db_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    """``--sql QUERY --from URL``: PostgreSQL read through asyncpg (an async driver),
    SQLite through the standard library's sync driver; typed columns, dotted names."""
    payloads, labels = transactions(150, seed=5)
    rows = [dotted_columns(p) | lab for p, lab in zip(payloads, labels, strict=True)]
    for r in rows:
        r["occurred_at"] = datetime.fromisoformat(r["occurred_at"])
    table = f"history_{uuid.uuid4().hex[:8]}"
    kinds: dict[str, Any] = {
        "amount": sa.Float(),
        "fraud": sa.Boolean(),
        "device.is_new": sa.Boolean(),
        "attributes.account_age_days": sa.Integer(),
        "occurred_at": sa.DateTime(timezone=True),
    }
    meta = sa.MetaData()
    t = sa.Table(table, meta, *(sa.Column(c, kinds.get(c, sa.String(128))) for c in rows[0]))
    if db_url.startswith("postgresql"):
        source_url = make_url(PG_ADMIN_URL).render_as_string(hide_password=False)
        source = create_engine(source_url)
        async with source.begin() as conn:
            await conn.run_sync(meta.create_all)
            await conn.execute(t.insert(), rows)
    else:
        # SQLite has no time type: a time is text, ISO 8601 with its offset.
        t.c.occurred_at.type = sa.String(40)
        for r in rows:
            r["occurred_at"] = r["occurred_at"].isoformat()
        source_url = f"sqlite:///{tmp_path / 'source.db'}"
        sync = sa.create_engine(source_url)
        meta.create_all(sync)
        with sync.begin() as conn:
            conn.execute(t.insert(), rows)
        sync.dispose()
    try:
        summary = await run_import(
            db_url,
            sql=f'SELECT * FROM {table} ORDER BY "occurred_at";',
            sql_url=source_url,
            rejects=tmp_path / "rejects.jsonl",
        )
    finally:
        if db_url.startswith("postgresql"):
            async with source.begin() as conn:
                await conn.run_sync(meta.drop_all)
            await source.dispose()

    assert (summary.rows_read, summary.imported, summary.rejected_total) == (150, 150, 0)
    labelled = await OutcomeStore(engine).labelled("transaction")
    assert [x.labels for x in labelled] == labels
    model = EVENT_MODELS["transaction"]
    assert [x.payload for x in labelled] == [
        model.model_validate(p).model_dump(mode="json") for p in payloads
    ]
    assert (await stored(engine))[0]["source_topic"] == f"import/{summary.run}/sql"


# --- rejects -------------------------------------------------------------------------


async def test_invalid_rows_go_to_the_rejects_file_with_row_numbers_and_reasons(
    db_url: str, tmp_path: Path
) -> None:
    """A bad amount, an unknown channel, a bad label and a repeated id are refused; the
    rest is imported. Each refused row is one line: source, row, reason, the problems
    with field and column names, and the raw row. The summary counts them by reason."""
    payloads, labels = transactions(10)
    rows = [dotted_columns(p) | lab for p, lab in zip(payloads, labels, strict=True)]
    rows[1]["amount"] = "-5"  # row 2
    rows[3]["channel"] = "pigeon"  # row 4
    rows[4]["fraud"] = "maybe"  # row 5
    rows[6]["event_id"] = rows[0]["event_id"]  # row 7 repeats row 1
    rows[8]["device.kind"] = ""  # row 9: a required nested field left empty
    path = write_csv(tmp_path / "history.csv", rows)
    with path.open("a", encoding="utf-8") as f:
        f.write("a,line,with,too,many,cells" + ",x" * 20 + "\n")  # line 12

    summary = await run_import(db_url, path)

    assert (summary.rows_read, summary.imported, summary.rejected_total) == (11, 5, 6)
    assert dict(summary.rejected) == {"invalid": 4, "bad_label": 1, "duplicate_id": 1}
    assert summary.rejects_path == tmp_path / "history.csv.rejects.jsonl"
    rejects = [json.loads(x) for x in summary.rejects_path.read_text().splitlines()]
    by_row = {r["row"]: r for r in rejects}
    assert sorted(by_row, key=str) == [2, 4, 5, 7, 9, None]
    assert by_row[None]["problems"][0]["message"] == "line 12 has 26 cells, the header 15"
    assert by_row[2]["reason"] == "invalid"
    [problem] = by_row[2]["problems"]
    assert (problem["field"], problem["column"]) == ("amount", "amount")
    assert "greater than or equal to 0" in problem["message"]
    assert by_row[2]["raw"]["amount"] == "-5"
    assert by_row[2]["raw"]["event_id"] == rows[1]["event_id"]
    assert by_row[4]["problems"][0]["field"] == "channel"
    assert by_row[5]["reason"] == "bad_label"
    assert by_row[5]["problems"] == [
        {
            "field": "fraud",
            "column": "fraud",
            "message": "label fraud: 'maybe' is not a boolean: write true or false (or 1 / 0)",
        }
    ]
    assert by_row[7]["reason"] == "duplicate_id"
    assert "already imported from row 1 of history.csv" in by_row[7]["problems"][0]["message"]
    assert by_row[9]["problems"][0] == {
        "field": "device.kind",
        "column": "device.kind",
        "message": "Field required",
    }
    assert all(r["source"] == str(path) for r in rejects)
    text = "\n".join(summary.lines())
    assert re.search(r"^rejected +6$", text, re.M)
    assert "duplicate_id" in text
    assert "bad_label" in text
    assert str(summary.rejects_path) in text


async def test_a_repeated_id_in_a_later_batch_is_refused_and_a_broken_json_line_kept(
    db_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    """Repeats across batches are found in the store (the first row wins, the later one
    is a reject naming it); a JSON Lines line that is not an object is refused with its
    line number, and a key no earlier line had refuses only its own row."""
    payloads, labels = transactions(1005)
    lines = [json.dumps(p | lab) for p, lab in zip(payloads, labels, strict=True)]
    lines[4] = json.dumps(payloads[0] | {"fraud": True})  # repeats line 1, two batches on
    lines.insert(2, "[1, 2]")  # line 3
    # Past the first 1,000 lines (which must place every key before anything is written).
    lines.append(json.dumps(payloads[5] | {"event_id": "late-1", "colour": "red"}))
    path = tmp_path / "history.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    summary = await run_import(db_url, path, batch=2)

    assert (summary.rows_read, summary.imported, summary.rejected_total) == (1007, 1004, 3)
    rejects = {r["row"]: r for r in map(json.loads, summary.rejects_path.read_text().splitlines())}
    assert rejects[3]["problems"][0]["message"] == "a line must hold a JSON object, not list"
    assert rejects[6]["reason"] == "duplicate_id"
    assert "row 1 of history.jsonl" in rejects[6]["problems"][0]["message"]
    assert rejects[1007]["problems"][0]["field"] == "colour"
    assert rejects[1007]["problems"][0]["message"] == "Extra inputs are not permitted"
    labelled = {x.event_id: x.labels for x in await OutcomeStore(engine).labelled("transaction")}
    assert labelled[payloads[0]["event_id"]] == labels[0]  # the first row's label, not True


# --- columns -------------------------------------------------------------------------


async def test_unknown_columns_are_refused_with_the_fix_and_nothing_is_written(
    db_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    payloads, labels = transactions(5)
    rows = [
        dotted_columns(p) | lab | {"colour": "red", "score": 1}
        for p, lab in zip(payloads, labels, strict=True)
    ]
    path = write_csv(tmp_path / "history.csv", rows)

    with pytest.raises(ConfigError) as info:
        await run_import(db_url, path)

    message = str(info.value)
    assert f"{path} has columns the type 'transaction' does not declare: colour, score." in message
    assert "--map COLUMN=FIELD" in message
    assert "--label COLUMN=LABEL" in message
    assert "--drop COLUMN" in message
    assert "labels: fraud" in message
    assert await stored(engine) == []

    summary = await run_import(db_url, path, drops=frozenset({"colour", "score"}))
    assert summary.imported == 5


async def test_map_and_label_read_columns_under_other_names(
    db_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    """``--map col=field`` (dotted for a nested field) and ``--label col=label``."""
    payloads, labels = transactions(20)
    renamed = {
        "event_id": "id",
        "occurred_at": "ts",
        "account_id": "acct",
        "device.kind": "kind",
        "fraud": "was_fraud",
    }
    rows = [
        {renamed.get(k, k): v for k, v in (dotted_columns(p) | lab).items()}
        for p, lab in zip(payloads, labels, strict=True)
    ]
    path = write_csv(tmp_path / "history.csv", rows)
    maps = {v: k for k, v in renamed.items() if k != "fraud"}

    summary = await run_import(db_url, path, maps=maps, labels={"was_fraud": "fraud"})

    assert (summary.imported, summary.outcomes_written) == (20, 20)
    labelled = await OutcomeStore(engine).labelled("transaction")
    model = EVENT_MODELS["transaction"]
    assert [x.payload for x in labelled] == [
        model.model_validate(p).model_dump(mode="json") for p in payloads
    ]
    assert [x.labels for x in labelled] == labels

    with pytest.raises(ConfigError, match=r"--map kind=device\.knd: the type 'transaction' has no"):
        await run_import(db_url, path, maps={**maps, "kind": "device.knd"})
    with pytest.raises(ConfigError, match="no column for the required field 'account_id'"):
        await run_import(db_url, path, maps={"id": "event_id"}, drops=frozenset(["acct"]))


async def test_a_file_with_an_unknown_extension_is_refused_naming_it(
    db_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "history.xlsx"
    path.write_text("x")
    with pytest.raises(ConfigError) as info:
        await run_import(db_url, path)
    assert str(info.value).startswith(f"{path}: cannot tell the format from the extension")
    assert ".csv, .parquet, .pq, .jsonl, .ndjson" in str(info.value)


# --- times ---------------------------------------------------------------------------

PING = """\
type: ping
id: ping_id
key: host
time: arrival
unknown_fields: reject
attributes: false
fields:
  ping_id: string
  host: string
  latency_ms: {type: number, min: 0}
  note: {type: string, required: false}
labels:
  down: boolean
"""


async def test_rows_of_a_type_without_a_time_column_get_times_counting_back_from_at(
    db_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    """A ``time: arrival`` type: row i of n gets ``--at`` - (n-1-i) ms (file order kept,
    times distinct, the last row at ``--at``); the summary says so. Without ``--at`` the
    import's start is used."""
    folder = tmp_path / "schemas"
    folder.mkdir()
    (folder / "ping.yaml").write_text(PING, encoding="utf-8")
    path = write_csv(
        tmp_path / "pings.csv",
        [
            {"ping_id": f"p{i}", "host": f"h{i % 2}", "latency_ms": i, "note": "", "down": i > 2}
            for i in range(5)
        ],
    )
    at = datetime(2025, 6, 1, tzinfo=UTC)

    summary = await run_import(db_url, path, event_type="ping", schemas_dir=folder, at=at)

    assert summary.imported == 5
    rows = await stored(engine)
    assert [r["occurred_at"] for r in rows] == [
        at - timedelta(milliseconds=4 - i) for i in range(5)
    ]
    assert rows[0]["payload"] == {
        "ping_id": "p0",
        "host": "h0",
        "latency_ms": 0.0,
        "note": None,
        "occurred_at": "2025-05-31T23:59:59.996000Z",
    }
    assert summary.times == (
        "5 rows had none and were given 2025-05-31T23:59:59.996Z to 2025-06-01T00:00:00.000Z, "
        "a millisecond apart in file order (from --at)"
    )
    labelled = await OutcomeStore(engine).labelled("ping")
    assert [x.labels for x in labelled] == [{"down": i > 2} for i in range(5)]

    path2 = write_csv(tmp_path / "more.csv", [{"ping_id": "q1", "host": "h", "latency_ms": 1}])
    later = await run_import(db_url, path2, event_type="ping", schemas_dir=folder)
    assert later.times is not None
    assert later.times.endswith("(from the start of the import)")
    assert (await stored(engine))[-1]["occurred_at"] == NOW


async def test_a_missing_time_column_of_a_type_that_declares_one_needs_at(
    db_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    payloads, labels = transactions(3)
    rows = [dotted_columns(p) | lab for p, lab in zip(payloads, labels, strict=True)]
    for r in rows:
        del r["occurred_at"]
    path = write_csv(tmp_path / "history.csv", rows)

    with pytest.raises(ConfigError) as info:
        await run_import(db_url, path)
    assert "has no column for the time field 'occurred_at'" in str(info.value)
    assert "--map COLUMN=occurred_at, or give --at ISO_TIME" in str(info.value)

    summary = await run_import(db_url, path, at=NOW)
    assert summary.imported == 3
    assert [r["occurred_at"] for r in await stored(engine)] == [
        NOW - timedelta(milliseconds=2 - i) for i in range(3)
    ]


# --- what imported rows are, for the rest of Arbiter ---------------------------------


async def test_imported_history_is_replayed_by_backtests_but_not_counted_as_decisions(
    db_url: str, engine: AsyncEngine, ledger: Ledger, tmp_path: Path
) -> None:
    """``decided_events`` (backtest, window rebuilds) includes imported rows, whose
    decision reads ``imported``; counts and latencies are those of real decisions."""
    payloads, labels = transactions(30)
    await run_import(db_url, write_file("csv", tmp_path / "h", payloads, labels))
    live = DecisionRecord(
        event_id="live-1",
        event_type="transaction",
        partition_key="acct-1",
        decision="approve",
        actions=[],
        scores={"fraud": 0.1},
        model_versions={},
        rules_fired=[],
        reasons=[],
        payload=payloads[0] | {"event_id": "live-1"},
        latency_ms=7.0,
        occurred_at=NOW,
        decided_at=NOW,
        source_topic="events.transaction",
        source_partition=0,
        source_offset=1,
    )
    await ledger.record([live], [])

    replayed = [
        e async for page in ledger.decided_events(datetime(2000, 1, 1, tzinfo=UTC)) for e in page
    ]

    assert len(replayed) == 31
    assert {e.decision for e in replayed} == {"imported", "approve"}
    assert await ledger.decision_counts() == {("transaction", "approve"): 1}
    assert await ledger.count_decisions() == 1
    assert await ledger.count_imported() == 30
    assert await ledger.latency_percentiles((0.5,)) == {0.5: 7.0}


# --- the command ---------------------------------------------------------------------


def test_arbiter_import_prints_a_summary_and_refuses_unknown_columns_with_exit_2(
    tmp_path: Path,
) -> None:
    # The CLI runs in a process of its own: it configures logging for its own streams.
    db = tmp_path / "data" / "arbiter.db"
    (tmp_path / "data").mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")},
        "ARBITER_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "ARBITER_DATABASE_AUTO_MIGRATE": "true",
        "ARBITER_DATA_DIR": str(tmp_path / "data"),
        "COLUMNS": "200",
    }
    payloads, labels = transactions(50)
    rows = [dotted_columns(p) | lab for p, lab in zip(payloads, labels, strict=True)]
    rows[7]["amount"] = "lots"
    path = write_csv(tmp_path / "history.csv", rows)

    def run(*args: str) -> tuple[int, str]:
        done = arbiter(*args, env=env, cwd=tmp_path / "data", timeout=120)
        return done.returncode, done.stdout + done.stderr

    code, output = run("import", "transaction", str(path))
    assert code == 0, output
    assert "importing transaction" in output
    assert re.search(r"^imported +49$", output, re.M)
    assert re.search(r"^  invalid +1$", output, re.M)
    assert re.search(r"^outcomes written +49$", output, re.M)
    assert f"{path}.rejects.jsonl" in output

    code, output = run("import", "transaction", str(path), "--map", "amount=amt")
    assert code == 2
    assert "error: --map amount=amt: the type 'transaction' has no field 'amt'" in output
    code, output = run("import", "transaction", str(path), "--map", "amount")
    assert code == 2
    assert "is not COLUMN=NAME" in output
