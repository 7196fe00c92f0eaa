"""``arbiter import TYPE FILE...``: load history (past events and their labels) into the
store, straight (no broker), marked as imported rather than decided. docs/import.md.

The steps: the type's declaration (``app.declarations``); the sources
(``import_sources``), whose columns are all placed on the type before anything is written
(``import_rows.plan_columns``: unknown columns refuse the import with the fix); then
batch by batch, each row mapped and validated (``RowMapper``), repeats of an id inside
the import refused, and the valid rows written with their labels in one transaction
(``app.store.imported``). Refused rows go to the rejects file, one JSON object a line
with the source, row number, reason, problems and the raw row. Importing the same rows
again adds nothing (the event id is unique in the ledger).

Rows whose source has no event time get one: row ``i`` of the ``n`` such rows gets
``at - (n - 1 - i)`` milliseconds, ``at`` being ``--at`` or the import's start, so the
file order is kept, every time is distinct and the last row is at ``at``. A type that
declares a time field only gets them with ``--at`` (a missing time column is more often
a column to map than a time to invent); a ``time: arrival`` type gets them by default.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from app.declarations import DeclaredType, load_declarations
from app.errors import ConfigError
from app.ops.import_rows import (
    REASONS,
    ColumnPlan,
    MappingError,
    Problem,
    Reason,
    Rejected,
    RowMapper,
    plan_columns,
    time_name,
)
from app.ops.import_sources import Batch, CsvSource, Source, SqlSource, open_files
from app.store.imported import ImportedEvent, ImportStore
from app.store.migrate import open_migrated, upgrade

Progress = Callable[[int, int | None], None]  # rows read so far, rows expected (None: unknown)
BATCH = 5_000


@dataclass(frozen=True)
class ImportRequest:
    """What to import: rows of ``files`` (or of the query ``sql`` on ``sql_url``) as
    events of ``event_type``."""

    event_type: str
    files: tuple[Path, ...] = ()
    sql: str | None = None
    sql_url: str | None = None
    maps: dict[str, str] = field(default_factory=dict)  # column -> field (dotted)
    labels: dict[str, str] = field(default_factory=dict)  # column -> label
    drops: frozenset[str] = frozenset()
    at: datetime | None = None
    rejects: Path | None = None
    batch: int = BATCH

    def rejects_path(self) -> Path:
        if self.rejects is not None:
            return self.rejects
        if self.files:
            first = self.files[0]
            return first.with_name(first.name + ".rejects.jsonl")
        return Path(f"import-{self.event_type}.rejects.jsonl")


@dataclass
class ImportSummary:
    """What an import did. ``rows_read == imported + already_present + sum(rejected)``."""

    event_type: str
    run: str
    started_at: datetime
    rows_read: int = 0
    imported: int = 0
    already_present: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    outcomes_written: int = 0
    outcomes_present: int = 0
    rejects_path: Path | None = None
    times: str | None = None  # what event time rows without one were given
    seconds: float = 0.0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def lines(self) -> list[str]:
        """The summary as the CLI prints it."""
        rate = f" ({self.rows_read / self.seconds:,.0f} rows/s)" if self.seconds > 0 else ""
        out = [
            f"rows read          {self.rows_read:>12,} in {self.seconds:,.1f} s{rate}",
            f"imported           {self.imported:>12,}",
            f"already present    {self.already_present:>12,}  (same event id in the store)",
            f"rejected           {self.rejected_total:>12,}",
        ]
        out += [
            f"  {reason:<16} {self.rejected[reason]:>12,}"
            for reason in REASONS
            if self.rejected[reason]
        ]
        out.append(f"outcomes written   {self.outcomes_written:>12,}")
        if self.outcomes_present:
            out.append(f"outcomes present   {self.outcomes_present:>12,}  (imported before)")
        if self.times:
            out.append(f"event times: {self.times}")
        if self.rejects_path is not None and self.rejected_total:
            out.append(f"rejected rows, with row numbers and reasons: {self.rejects_path}")
        return out


class _Rejects:
    """The rejects file, opened (and emptied) at the first rejected row."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def write(self, source: str, rejected: Rejected, line: int | None = None) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")
        record: dict[str, Any] = {"source": source, "row": rejected.row}
        if line is not None:
            record["line"] = line
        record |= {
            "reason": rejected.reason,
            "problems": [p.as_dict() for p in rejected.problems],
            "raw": rejected.raw,
        }
        self._file.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _declared(schemas_dir: Path, event_type: str) -> DeclaredType:
    declarations, problems = load_declarations(schemas_dir)
    if event_type in declarations:
        return declarations[event_type]
    mine = [str(p) for p in problems if f"{event_type}.yaml" in p.file]
    if mine:
        raise ConfigError(
            f"the declaration of '{event_type}' has problems: "
            + "; ".join(mine)
            + " — fix them (arbiter schemas check)"
        )
    raise ConfigError(
        f"unknown event type '{event_type}': declared types in {schemas_dir} are "
        f"{', '.join(sorted(declarations)) or 'none'} — declare it there (docs/events.md) "
        "or set ARBITER_SCHEMAS_DIR"
    )


def _sources(request: ImportRequest) -> list[Source]:
    if request.sql is not None or request.sql_url is not None:
        if request.files:
            raise ConfigError("give files or --sql QUERY --from URL, not both")
        if not request.sql or not request.sql_url:
            raise ConfigError("--sql QUERY and --from URL go together: give both")
        return [SqlSource(request.sql, request.sql_url)]
    if not request.files:
        raise ConfigError("nothing to import: give one or more files, or --sql QUERY --from URL")
    return open_files(list(request.files))


class _Importer:
    """One import run: plans, times, batches, counts."""

    def __init__(
        self,
        request: ImportRequest,
        declared: DeclaredType,
        summary: ImportSummary,
        rejects: _Rejects,
        progress: Progress,
    ) -> None:
        self.request = request
        self.declared = declared
        self.summary = summary
        self.rejects = rejects
        self.progress = progress
        self.mappers: dict[tuple[str, tuple[str, ...]], RowMapper] = {}
        self.timed: set[str] = set()  # sources whose rows get a time
        self.time_rows = 0  # how many rows get one, in the whole import
        self.time_index = 0
        self.time_base = request.at or summary.started_at
        self.total: int | None = None

    def mapper(self, source: Source, columns: tuple[str, ...], *, first: bool) -> RowMapper:
        key = (source.name, columns)
        found = self.mappers.get(key)
        if found is not None:
            return found
        try:
            plan = plan_columns(
                self.declared,
                columns,
                source=source.name,
                maps=self.request.maps,
                labels=self.request.labels,
                drops=self.request.drops,
                lenient=not first,
            )
        except MappingError as exc:
            raise ConfigError(str(exc)) from None
        if first:
            self._check_time(source, plan)
        mapper = RowMapper(self.declared, plan, text=isinstance(source, CsvSource))
        self.mappers[key] = mapper
        return mapper

    def _check_time(self, source: Source, plan: ColumnPlan) -> None:
        spec = self.declared.spec
        if plan.time_given:
            if self.request.at is not None:
                raise ConfigError(
                    f"{source.name} has the event time (column for {time_name(spec)!r}): "
                    "--at is only for sources without one — leave it out"
                )
            return
        if spec.time_field is not None and self.request.at is None:
            raise ConfigError(
                f"{source.name} has no column for the time field {spec.time_field!r} of "
                f"'{spec.name}': map the column that holds it with --map "
                f"COLUMN={spec.time_field}, or give --at ISO_TIME to give the rows times "
                "counting back from it, a millisecond apart (docs/import.md)"
            )
        self.timed.add(source.name)

    async def prepare(self, sources: Sequence[Source]) -> None:
        """Plan every file before anything is written (a query's columns are known when it
        runs), count the rows that need times, estimate the total for the progress bar."""
        for source in sources:
            if not isinstance(source, SqlSource):
                self.mapper(source, source.columns(), first=True)
        estimates = [await s.estimate() for s in sources]
        self.total = None if None in estimates else sum(e or 0 for e in estimates)

    def time_for(self, source: Source) -> datetime | None:
        if source.name not in self.timed:
            return None
        offset = self.time_rows - 1 - self.time_index
        self.time_index += 1
        return self.time_base - timedelta(milliseconds=offset)

    def reject(self, source: Source, rejected: Rejected, line: int | None = None) -> None:
        self.summary.rejected[rejected.reason] += 1
        self.rejects.write(source.name, rejected, line)

    async def run(self, sources: Sequence[Source], store: ImportStore) -> None:
        for source in sources:
            first = True
            async for batch in source.batches(self.request.batch):
                mapper = self.mapper(source, batch.columns, first=first)
                if first and source.name in self.timed and isinstance(source, SqlSource):
                    self.time_rows += await source.count()
                first = False
                await self.batch(source, batch, mapper, store)

    async def batch(
        self, source: Source, batch: Batch, mapper: RowMapper, store: ImportStore
    ) -> None:
        summary = self.summary
        for number, problem, text in batch.broken:
            summary.rows_read += 1
            self.reject(
                source,
                Rejected(number, "invalid", (Problem("(row)", problem),), {"text": text}),
            )
        valid: dict[str, ImportedEvent] = {}
        raw: dict[int, tuple[Any, ...]] = {}
        for number, values in batch.rows:
            summary.rows_read += 1
            mapped = mapper.map(values, number, self.time_for(source))
            if isinstance(mapped, Rejected):
                self.reject(source, mapped)
                continue
            earlier = valid.get(mapped.event_id)
            if earlier is not None:
                self.reject(source, _repeat(mapper, values, mapped, source.tag, earlier.row))
                continue
            valid[mapped.event_id] = mapped
            raw[number] = values
        if valid:
            written = await store.write(source.tag, list(valid.values()))
            summary.imported += len(written.inserted)
            summary.already_present += len(written.present)
            summary.outcomes_written += written.outcomes_stored
            summary.outcomes_present += written.outcomes_present
            for event_id, (tag, row) in sorted(written.repeated.items()):
                event = valid[event_id]
                self.reject(source, _repeat(mapper, raw[event.row], event, tag, row))
        self.progress(summary.rows_read, self.total)


def _repeat(
    mapper: RowMapper, values: tuple[Any, ...], event: ImportedEvent, where: str, row: int
) -> Rejected:
    reason: Reason = "duplicate_id"
    problem = Problem(
        "event_id",
        f"event id {event.event_id!r} was already imported from row {row} of {where} "
        "in this import; the first row with an id wins",
    )
    return Rejected(event.row, reason, (problem,), mapper.raw(values))


async def import_history(
    request: ImportRequest,
    *,
    database_url: str,
    schemas_dir: Path,
    auto_migrate: bool = False,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> ImportSummary:
    """Import ``request`` into the store at ``database_url``; the summary says what
    happened to every row. Problems found before a row is written (unknown type or
    columns, unreadable files, a missing time) raise ``ConfigError``."""
    started = (now or datetime.now(UTC)).astimezone(UTC)
    declared = _declared(schemas_dir, request.event_type)
    if request.batch < 1:
        raise ConfigError(f"the batch size must be at least 1, got {request.batch}")
    sources = _sources(request)
    run = f"{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    summary = ImportSummary(declared.name, run, started, rejects_path=request.rejects_path())
    rejects = _Rejects(summary.rejects_path or request.rejects_path())
    importer = _Importer(request, declared, summary, rejects, progress or (lambda _d, _t: None))
    await importer.prepare(sources)
    for source in sources:
        if source.name in importer.timed:
            importer.time_rows += await source.count()
    if auto_migrate:
        await upgrade(database_url)
    clock = datetime.now(UTC)
    try:
        async with open_migrated(database_url) as engine:
            store = ImportStore(engine, run=run, imported_at=started)
            await importer.run(sources, store)
    finally:
        rejects.close()
    summary.seconds = (datetime.now(UTC) - clock).total_seconds()
    if importer.time_index:
        summary.times = (
            f"{importer.time_index:,} rows had none and were given "
            f"{_iso(importer.time_base - timedelta(milliseconds=importer.time_rows - 1))} to "
            f"{_iso(importer.time_base)}, a millisecond apart in file order (from "
            f"{'--at' if request.at else 'the start of the import'})"
        )
    return summary


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
