"""Where ``arbiter import`` reads history from: CSV, Parquet and JSON Lines files, or a
SQL query. Every source is read in batches (constant memory whatever its size) and
hands out rows as cells in column order, numbered from 1.

- CSV (``.csv``) through pandas' C parser in chunks, every cell read as text (so ids keep
  their leading zeros and the type's own rules convert numbers and booleans); quoted
  cells may hold newlines. A line with more cells than the header is handed out as
  broken; missing trailing cells are empty. (pyarrow's streaming CSV reader was faster
  alone but decoded the whole file ahead of a slower consumer: memory grew with the file.)
- Parquet (``.parquet``, ``.pq``) through pyarrow, typed as stored; nested structs are
  objects. pandas' ``__index_level_N__`` columns are ignored.
- JSON Lines (``.jsonl``, ``.ndjson``): one object per line, parsed as written (nested
  objects stay objects, nothing is guessed); the row number is the line number.
- SQL: any SQLAlchemy URL (async drivers like ``postgresql+asyncpg`` and sync ones like
  ``sqlite`` alike), read with a streaming cursor.
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from app.errors import ConfigError
from app.store.db import describe_cause, display_url

SUFFIXES = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_PANDAS_INDEX = re.compile(r"^__index_level_\d+__$")
_SKIPPED = re.compile(r"Skipping line (\d+): expected (\d+) fields, saw (\d+)")
_COUNT_CHUNK = 100_000


@dataclass
class Batch:
    """Consecutive rows of one source: ``rows`` are (row number, cells in ``columns``
    order); ``broken`` are rows that could not even be read, (row number or None, what
    went wrong, the raw text)."""

    columns: tuple[str, ...]
    rows: list[tuple[int, tuple[Any, ...]]]
    broken: list[tuple[int | None, str, str]] = field(default_factory=list)


class Source(Protocol):
    """A source of rows."""

    @property
    def name(self) -> str:
        """How messages and the rejects file name it (the path, or ``sql``)."""
        ...

    @property
    def tag(self) -> str:
        """A short name stored with every imported row (the file name)."""
        ...

    def columns(self) -> tuple[str, ...]:
        """The columns, before reading any row (JSON Lines: those of the first lines)."""
        ...

    async def estimate(self) -> int | None:
        """About how many rows (for the progress bar); None when it costs a query."""
        ...

    async def count(self) -> int:
        """Exactly how many rows (only asked when rows need times)."""
        ...

    def batches(self, size: int) -> AsyncIterator[Batch]:
        """Every row, in order, ``size`` at a time."""
        ...


def open_files(paths: list[Path]) -> list[Source]:
    """A source per file, chosen by extension; a missing file or an unknown extension is
    a ``ConfigError`` naming the file and what is supported."""
    sources: list[Source] = []
    for path in paths:
        kind = SUFFIXES.get(path.suffix.lower())
        if kind is None:
            raise ConfigError(
                f"{path}: cannot tell the format from the extension {path.suffix or '(none)'!r}"
                f" — supported: {', '.join(SUFFIXES)} (CSV, Parquet, JSON Lines); rename the "
                "file, or load it into a table and use --sql QUERY --from URL"
            )
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
        if kind == "csv":
            sources.append(CsvSource(path))
        elif kind == "parquet":
            sources.append(ParquetSource(path))
        else:
            sources.append(JsonLinesSource(path))
    return sources


def _count_lines(path: Path) -> int:
    """Lines of a text file, counted in binary blocks (an estimate of its rows)."""
    n = 0
    last = b"\n"
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


class CsvSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        self.tag = path.name
        self._columns: tuple[str, ...] | None = None

    def columns(self) -> tuple[str, ...]:
        if self._columns is None:
            with self.path.open(newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), None)
            if not header:
                raise ConfigError(f"{self.path}: empty file — a CSV needs a header line")
            self._columns = tuple(h.strip() for h in header)
        return self._columns

    async def estimate(self) -> int | None:
        return max(_count_lines(self.path) - 1, 0)

    async def count(self) -> int:
        return sum(len(chunk) for chunk in self._chunks(_COUNT_CHUNK, usecols=[0]))

    def _chunks(self, size: int, **options: Any) -> Iterator[Any]:
        """pandas' C parser, ``size`` rows at a time (it reads the file as it goes: memory
        stays flat however big the file), every cell as text, empty cells empty."""
        import pandas as pd

        try:
            yield from pd.read_csv(
                self.path,
                dtype=str,
                keep_default_na=False,
                chunksize=size,
                on_bad_lines="warn",
                encoding="utf-8-sig",
                **options,
            )
        except (ValueError, OSError, UnicodeDecodeError) as exc:  # pandas' ParserError too
            raise ConfigError(f"{self.path}: cannot read it as CSV: {exc}") from exc

    async def batches(self, size: int) -> AsyncIterator[Batch]:
        row = 0
        columns = self.columns()
        chunks = self._chunks(size)
        while True:
            with warnings.catch_warnings(record=True) as caught:
                # A line with more cells than the header is skipped with a ParserWarning
                # naming its line: it becomes a broken row.
                warnings.simplefilter("always")
                chunk = next(chunks, None)
            broken: list[tuple[int | None, str, str]] = []
            for warning in caught:
                for line in str(warning.message).strip().splitlines():
                    found = _SKIPPED.match(line.strip())
                    if found:
                        message = f"line {found[1]} has {found[3]} cells, the header {found[2]}"
                        broken.append((None, message, ""))
            if chunk is None:
                if broken:
                    yield Batch(columns, [], broken)
                return
            cells = [chunk[c].tolist() for c in chunk.columns]
            rows = [(row + i + 1, r) for i, r in enumerate(zip(*cells, strict=True))]
            row += len(rows)
            yield Batch(columns, rows, broken)


class ParquetSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        self.tag = path.name
        self._file: Any = None

    def _parquet(self) -> Any:
        if self._file is None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                self._file = pq.ParquetFile(self.path)
            except (pa.ArrowException, OSError) as exc:
                raise ConfigError(f"{self.path}: cannot read it as Parquet: {exc}") from exc
        return self._file

    def _all_columns(self) -> list[str]:
        return [str(n) for n in self._parquet().schema_arrow.names]

    def columns(self) -> tuple[str, ...]:
        return tuple(n for n in self._all_columns() if not _PANDAS_INDEX.match(n))

    async def estimate(self) -> int | None:
        return int(self._parquet().metadata.num_rows)

    async def count(self) -> int:
        return int(self._parquet().metadata.num_rows)

    async def batches(self, size: int) -> AsyncIterator[Batch]:
        columns = self.columns()
        row = 0
        for record_batch in self._parquet().iter_batches(batch_size=size, columns=list(columns)):
            cells = [record_batch.column(i).to_pylist() for i in range(record_batch.num_columns)]
            part = list(zip(*cells, strict=True))
            yield Batch(columns, [(row + i + 1, r) for i, r in enumerate(part)])
            row += len(part)


class JsonLinesSource:
    _PEEK = 1000  # lines read for the columns before the import starts

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        self.tag = path.name

    def _lines(self) -> Iterator[tuple[int, str]]:
        with self.path.open(encoding="utf-8-sig") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    yield number, line

    def columns(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for i, (_, line) in enumerate(self._lines()):
            if i >= self._PEEK:
                break
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                seen.update(dict.fromkeys(str(k) for k in obj))
        return tuple(seen)

    async def estimate(self) -> int | None:
        return _count_lines(self.path)

    async def count(self) -> int:
        return sum(1 for _ in self._lines())

    async def batches(self, size: int) -> AsyncIterator[Batch]:
        objects: list[tuple[int, dict[str, Any]]] = []
        broken: list[tuple[int | None, str, str]] = []
        for number, line in self._lines():
            try:
                obj = json.loads(line)
            except ValueError as exc:
                broken.append((number, f"not JSON: {exc}", line.rstrip("\n")))
                obj = None
            else:
                if isinstance(obj, dict):
                    objects.append((number, obj))
                else:
                    broken.append(
                        (number, f"a line must hold a JSON object, not {type(obj).__name__}", line)
                    )
            if len(objects) + len(broken) >= size:
                yield _json_batch(objects, broken)
                objects, broken = [], []
        if objects or broken:
            yield _json_batch(objects, broken)


def _json_batch(
    objects: list[tuple[int, dict[str, Any]]], broken: list[tuple[int | None, str, str]]
) -> Batch:
    keys: dict[str, None] = {}
    for _, obj in objects:
        keys.update(dict.fromkeys(obj))
    columns = tuple(keys)
    rows = [(n, tuple(obj.get(c) for c in columns)) for n, obj in objects]
    return Batch(columns, rows, broken)


class SqlSource:
    """The rows of ``query`` on the database at ``url``."""

    def __init__(self, query: str, url: str) -> None:
        self.query = query.strip().rstrip(";").strip()
        self.url = url
        self.name = "sql"
        self.tag = "sql"
        self._columns: tuple[str, ...] | None = None
        try:
            parsed = make_url(url)
            self._async = bool(parsed.get_dialect().is_async)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise ConfigError(
                f"--from {url!r}: not a usable SQLAlchemy URL ({exc}); write e.g. "
                "postgresql+asyncpg://user@host/db or sqlite:///path/to/file.db"
            ) from exc

    def _fail(self, exc: BaseException) -> ConfigError:
        return ConfigError(
            f"cannot run the --sql query on {display_url(self.url)}: "
            f"{describe_cause(exc, self.url)}"
        )

    async def _scalar(self, statement: sa.TextClause) -> Any:
        try:
            if self._async:
                engine = create_async_engine(self.url)
                try:
                    async with engine.connect() as conn:
                        return (await conn.execute(statement)).scalar_one()
                finally:
                    await engine.dispose()
            sync = sa.create_engine(self.url)
            try:
                with sync.connect() as conn:
                    return conn.execute(statement).scalar_one()
            finally:
                sync.dispose()
        except (SQLAlchemyError, OSError, ImportError) as exc:
            raise self._fail(exc) from exc

    def columns(self) -> tuple[str, ...]:
        if self._columns is None:
            raise RuntimeError("the columns of a query are known once it runs (batches)")
        return self._columns

    async def estimate(self) -> int | None:
        return None

    async def count(self) -> int:
        return int(await self._scalar(sa.text(f"SELECT count(*) FROM ({self.query}) AS rows_")))

    async def batches(self, size: int) -> AsyncIterator[Batch]:
        try:
            if self._async:
                async for batch in self._async_batches(size):
                    yield batch
            else:
                for batch in self._sync_batches(size):
                    yield batch
        except (SQLAlchemyError, OSError, ImportError) as exc:
            raise self._fail(exc) from exc

    async def _async_batches(self, size: int) -> AsyncIterator[Batch]:
        engine = create_async_engine(self.url)
        try:
            async with engine.connect() as conn:
                result = await conn.stream(sa.text(self.query))
                self._columns = tuple(map(str, result.keys()))
                row = 0
                async for part in result.partitions(size):
                    rows = [(row + i + 1, tuple(r)) for i, r in enumerate(part)]
                    yield Batch(self._columns, rows)
                    row += len(part)
        finally:
            await engine.dispose()

    def _sync_batches(self, size: int) -> Iterator[Batch]:
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                result = conn.execution_options(stream_results=True).execute(sa.text(self.query))
                self._columns = tuple(map(str, result.keys()))
                row = 0
                for part in result.partitions(size):
                    rows = [(row + i + 1, tuple(r)) for i, r in enumerate(part)]
                    yield Batch(self._columns, rows)
                    row += len(part)
        finally:
            engine.dispose()
