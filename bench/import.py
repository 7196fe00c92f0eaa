"""Import rate: ``arbiter import`` of a CSV of labelled transactions into SQLite, beside
pandas reading the same file alone (the baseline: what reading costs, nothing stored).

    .venv/bin/python bench/import.py                  # ~3 min on 2 cores: 1,000,000 rows
    .venv/bin/python bench/import.py --rows 50000 --no-record

The CSV is written once (100,000 simulator transactions, seed 7, with their ``fraud``
label, repeated with new ids and times shifted by the span of the base until ``--rows``).
Each measure runs in a child process of its own, so its peak memory (max RSS) is its own:
``pandas.read_csv`` of the whole file, with its default types and with every cell read as
text (``dtype=str``, as the import reads CSV); the import's CSV reader alone (the same
parser in chunks of 5,000 rows, turned into rows of Python values); the import itself
(``app.ops.importer.import_history``) into a fresh, migrated SQLite file, then the same
file imported again (every row already present).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib import REPO, append_results, git_commit

BASE = 100_000


def write_csv(path: Path, rows: int) -> None:
    from app.ops.import_rows import dotted_columns
    from app.simulator.generate import labelled_events

    events, labels = labelled_events("transaction", min(rows, BASE), seed=7)
    pairs = zip(events, labels, strict=True)
    base = [dotted_columns(e.model_dump(mode="json")) | lab for e, lab in pairs]
    first = dt.datetime.fromisoformat(base[0]["occurred_at"])
    span = dt.datetime.fromisoformat(base[-1]["occurred_at"]) - first + dt.timedelta(seconds=1)
    columns = list(dict.fromkeys(k for r in base for k in r))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        written = 0
        copy = 0
        while written < rows:
            for row in base[: rows - written]:
                out = dict(row)
                if copy:
                    out["event_id"] = f"{row['event_id']}-{copy}"
                    at = dt.datetime.fromisoformat(row["occurred_at"]) + span * copy
                    out["occurred_at"] = at.isoformat().replace("+00:00", "Z")
                writer.writerow(out)
            written += min(len(base), rows - written)
            copy += 1


def measure(what: str, path: Path, db: Path) -> dict[str, Any]:
    """One measure, in this (child) process; the clock starts after the imports."""
    # Each measure imports only what it uses: max RSS is the measure's own.
    out: dict[str, Any] = {}
    url = f"sqlite+aiosqlite:///{db}"
    if what == "write":
        started = time.perf_counter()
        write_csv(path, int(db.name))
        out["rows"] = int(db.name)
    elif what in ("pandas", "pandas-text"):
        import pandas as pd

        started = time.perf_counter()
        options = {"dtype": str, "keep_default_na": False} if what == "pandas-text" else {}
        out["rows"] = len(pd.read_csv(path, **options))
    elif what == "reader":
        import pandas  # noqa: F401 - imported before the clock starts, as in the others

        from app.ops.import_sources import CsvSource

        started = time.perf_counter()

        async def read() -> int:
            n = 0
            async for batch in CsvSource(path).batches(5_000):
                n += len(batch.rows)
            return n

        out["rows"] = asyncio.run(read())
    else:
        from app.ops.importer import ImportRequest, import_history
        from app.store import upgrade

        if what == "import":
            asyncio.run(upgrade(url))
        started = time.perf_counter()
        summary = asyncio.run(
            import_history(
                ImportRequest("transaction", (path,)),
                database_url=url,
                schemas_dir=REPO / "schemas",
            )
        )
        out |= {
            "rows": summary.rows_read,
            "imported": summary.imported,
            "present": summary.already_present,
            "rejected": summary.rejected_total,
            "outcomes": summary.outcomes_written,
        }
    out["seconds"] = time.perf_counter() - started
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def child(what: str, path: Path, db: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'bench'}"}
    done = subprocess.run(
        [sys.executable, __file__, "--measure", what, "--csv", str(path), "--db", str(db)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.csv, args.db)))
        return 0

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        path = Path(tmp) / "transactions.csv"
        db = Path(tmp) / "arbiter.db"
        # Written by a child too: Linux carries a process's peak RSS over to the children
        # it starts, so this process stays small for theirs to be their own.
        took = child("write", path, Path(str(args.rows)))["seconds"]
        size_mb = path.stat().st_size / 1e6
        print(f"wrote {args.rows:,} rows ({size_mb:,.0f} MB) in {took:.0f} s")
        results = {}
        for what in ("pandas", "pandas-text", "reader", "import", "reimport"):
            results[what] = child(what, path, db)
            print(what, results[what], flush=True)
        db_mb = (
            db.stat().st_size / 1e6
            + sum(p.stat().st_size for p in db.parent.glob("arbiter.db-*")) / 1e6
        )

    base = results["pandas"]["seconds"]
    labels = {
        "pandas": "pandas `read_csv`, whole file, default types (baseline)",
        "pandas-text": "pandas `read_csv(dtype=str)`: every cell as text, as the import reads",
        "reader": "the import's CSV reader alone (pandas in chunks, rows of Python values)",
        "import": "`arbiter import` into a fresh SQLite ledger",
        "reimport": "the same file again (every row already present)",
    }
    table = [
        "| step | rows | seconds | rows/s | vs pandas read | max RSS MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for what, r in results.items():
        table.append(
            f"| {labels[what]} | {r['rows']:,} | {r['seconds']:,.1f} | "
            f"{r['rows'] / r['seconds']:,.0f} | {r['seconds'] / base:.1f}x | "
            f"{r['max_rss_mb']:,.0f} |"
        )
    print("\n".join(table))
    imp = results["import"]
    if args.no_record:
        return 0
    section = (
        f"\n## import: {args.rows:,} rows of CSV into SQLite — "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC\n\n"
        f"- machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
        f"before the run {load}\n"
        f"- git commit: {git_commit()}\n"
        f"- workload: `bench/import.py --rows {args.rows}`: a {size_mb:,.0f} MB CSV of labelled "
        f"simulator transactions (dotted columns for `device.*` and `attributes.*`, a `fraud` "
        f"label); each step in a child process of its own; the ledger afterwards "
        f"{db_mb:,.0f} MB\n"
        f"- import result: {imp['imported']:,} imported, {imp['rejected']:,} rejected, "
        f"{imp['outcomes']:,} outcomes; again: {results['reimport']['present']:,} already "
        "present, nothing written\n\n" + "\n".join(table) + "\n"
    )
    return append_results(section)


if __name__ == "__main__":
    sys.exit(main())
