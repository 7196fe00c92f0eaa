"""The model registry tables: which versions exist, which one serves, which shadow it.

Statuses: ``champion`` (scores and decides; at most one per name, enforced by a partial
unique index), ``challenger`` (registered, not serving; may be marked ``shadow`` to score
beside the champion without changing a decision) and ``retired``. Every change is one
transaction and leaves a row in ``model_events``. Consumers poll ``in_service`` between
batches and swap models when it changes, so promotion needs no restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.errors import ConfigError
from app.store.tables import model_events, model_versions
from app.values import ModelMeta

STATUSES = ("champion", "challenger", "retired")


@dataclass(frozen=True)
class ModelRecord:
    """One registered version: its description plus its place in service."""

    meta: ModelMeta
    status: str
    shadow: bool
    artifact_path: str
    promoted_at: datetime | None

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def version(self) -> int:
        return self.meta.version


@dataclass(frozen=True)
class ModelEvent:
    name: str
    version: int | None
    action: str
    detail: str
    at: datetime


@dataclass(frozen=True)
class InService:
    """What should be serving for one model name: the champion and the shadows."""

    champion: int | None
    shadows: tuple[int, ...]


class VersionExists(ConfigError):
    """The (name, version) pair is registered already (another process won the race)."""


def _record(row: Any) -> ModelRecord:
    meta = ModelMeta(
        name=row.name,
        version=row.version,
        family=row.family,
        kind=row.kind,
        features=tuple(row.features),
        metrics=dict(row.metrics),
        created_at=row.created_at.isoformat(timespec="seconds"),
        trained_on=row.trained_on,
        window_start=row.window_start,
        window_end=row.window_end,
        classes=tuple(row.classes),
        params=dict(row.params),
        files=dict(row.files),
    )
    return ModelRecord(meta, row.status, bool(row.shadow), row.artifact_path, row.promoted_at)


def _created(meta: ModelMeta) -> datetime:
    try:
        value = datetime.fromisoformat(meta.created_at)
    except ValueError:
        return datetime.now(UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class ModelRegistry:
    """Reads and changes the registry through one ``AsyncEngine``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def register(
        self,
        meta: ModelMeta,
        *,
        status: str = "challenger",
        detail: str = "",
        only_if_no_champion: bool = False,
    ) -> ModelRecord:
        """Add a version. ``status="champion"`` also retires the current champion — unless
        ``only_if_no_champion``: then an existing champion makes it fail (``VersionExists``,
        nothing registered), which is how concurrent first start-ups agree on one."""
        if status not in STATUSES:
            raise ConfigError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        now = datetime.now(UTC)
        row = {
            "name": meta.name,
            "version": meta.version,
            "family": meta.family,
            "kind": meta.kind,
            "status": "challenger",
            "shadow": False,
            "created_at": _created(meta),
            "promoted_at": None,
            "window_start": meta.window_start,
            "window_end": meta.window_end,
            "trained_on": meta.trained_on,
            "features": list(meta.features),
            "metrics": dict(meta.metrics),
            "params": dict(meta.params),
            "classes": list(meta.classes),
            "artifact_path": f"{meta.name}/{meta.tag}",
            "files": dict(meta.files),
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(sa.insert(model_versions).values(**row))
                await self._event(conn, meta.name, meta.version, "registered", detail, now)
                if status == "champion" and only_if_no_champion:
                    # The partial unique index refuses this if another champion exists.
                    await self._set(
                        conn, meta.name, meta.version, status="champion", promoted_at=now
                    )
                    await self._event(conn, meta.name, meta.version, "promoted", detail, now)
                elif status == "champion":
                    await self._make_champion(conn, meta.name, meta.version, now, "promoted")
                elif status == "retired":
                    await self._set(conn, meta.name, meta.version, status="retired")
        except IntegrityError as exc:
            raise VersionExists(
                f"{meta.name} {meta.tag} is already registered (or another champion was set "
                "at the same moment): list the registry with `arbiter models list`"
            ) from exc
        found = await self.get(meta.name, meta.version)
        assert found is not None
        return found

    async def versions(self, name: str | None = None) -> list[ModelRecord]:
        query = sa.select(model_versions).order_by(model_versions.c.name, model_versions.c.version)
        if name is not None:
            query = query.where(model_versions.c.name == name)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows]

    async def get(self, name: str, version: int) -> ModelRecord | None:
        query = sa.select(model_versions).where(
            model_versions.c.name == name, model_versions.c.version == version
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _record(row) if row is not None else None

    async def champion(self, name: str) -> ModelRecord | None:
        query = sa.select(model_versions).where(
            model_versions.c.name == name, model_versions.c.status == "champion"
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _record(row) if row is not None else None

    async def in_service(self) -> dict[str, InService]:
        """Champion and shadow versions per name: the cheap query consumers poll."""
        c = model_versions.c
        query = sa.select(c.name, c.version, c.status, c.shadow).where(
            sa.or_(c.status == "champion", c.shadow.is_(True))
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        champions: dict[str, int] = {}
        shadows: dict[str, list[int]] = {}
        for name, version, status, shadow in rows:
            if status == "champion":
                champions[name] = version
            elif shadow:
                shadows.setdefault(name, []).append(version)
        names = sorted(set(champions) | set(shadows))
        return {n: InService(champions.get(n), tuple(sorted(shadows.get(n, ())))) for n in names}

    async def events(self, name: str, limit: int = 20) -> list[ModelEvent]:
        c = model_events.c
        query = sa.select(model_events).where(c.name == name).order_by(c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [ModelEvent(r.name, r.version, r.action, r.detail, r.at) for r in rows]

    async def record_event(
        self, name: str, version: int | None, action: str, detail: str = ""
    ) -> None:
        async with self._engine.begin() as conn:
            await self._event(conn, name, version, action, detail, datetime.now(UTC))

    async def promote(self, name: str, version: int, *, detail: str = "") -> ModelRecord:
        """Make ``version`` the champion; the previous champion is retired."""
        record = await self._require(name, version)
        if record.status == "champion":
            return record
        async with self._engine.begin() as conn:
            await self._make_champion(conn, name, version, datetime.now(UTC), "promoted", detail)
        return await self._require(name, version)

    async def rollback(self, name: str) -> tuple[ModelRecord, ModelRecord]:
        """Retire the champion and bring back the one promoted before it.

        Returns (retired, restored). "Before it" is by promotion time, which rollback does
        not change, so rolling back twice walks further back in history.
        """
        current = await self.champion(name)
        if current is None:
            raise ConfigError(f"{name} has no champion to roll back: see `arbiter models list`")
        c = model_versions.c
        query = (
            sa.select(model_versions)
            .where(
                c.name == name,
                c.version != current.version,
                c.promoted_at.is_not(None),
                c.promoted_at <= (current.promoted_at or datetime.now(UTC)),
            )
            .order_by(c.promoted_at.desc(), c.version.desc())
            .limit(1)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise ConfigError(
                f"{name} {current.meta.tag} is the first champion it ever had: nothing to "
                f"roll back to. Promote a version instead: `arbiter models promote {name} N`"
            )
        previous = _record(row)
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            await self._set(conn, name, current.version, status="retired", shadow=False)
            await self._set(conn, name, previous.version, status="champion", shadow=False)
            await self._event(
                conn, name, previous.version, "rolled_back", f"from {current.meta.tag}", now
            )
        return await self._require(name, current.version), await self._require(
            name, previous.version
        )

    async def set_shadow(self, name: str, version: int, on: bool) -> ModelRecord:
        """Put a non-champion version in shadow (it scores, it never decides), or take it out."""
        record = await self._require(name, version)
        if on and record.status == "champion":
            raise ConfigError(
                f"{name} {record.meta.tag} is the champion: it already scores every event; "
                "shadow a challenger instead"
            )
        async with self._engine.begin() as conn:
            values: dict[str, Any] = {"shadow": on}
            if on and record.status == "retired":
                values["status"] = "challenger"
            await self._set(conn, name, version, **values)
            action = "shadow_on" if on else "shadow_off"
            await self._event(conn, name, version, action, "", datetime.now(UTC))
        return await self._require(name, version)

    async def retire(self, name: str, version: int) -> ModelRecord:
        record = await self._require(name, version)
        if record.status == "champion":
            raise ConfigError(
                f"{name} {record.meta.tag} is the champion: promote another version or roll "
                "back before retiring it"
            )
        async with self._engine.begin() as conn:
            await self._set(conn, name, version, status="retired", shadow=False)
            await self._event(conn, name, version, "retired", "", datetime.now(UTC))
        return await self._require(name, version)

    # --- helpers ----------------------------------------------------------------------

    async def _require(self, name: str, version: int) -> ModelRecord:
        record = await self.get(name, version)
        if record is None:
            known = [r.meta.tag for r in await self.versions(name)]
            hint = f"known versions: {', '.join(known)}" if known else "it has no versions"
            raise ConfigError(f"{name} v{version} is not registered ({hint})")
        return record

    async def _make_champion(
        self,
        conn: AsyncConnection,
        name: str,
        version: int,
        now: datetime,
        action: str,
        detail: str = "",
    ) -> None:
        c = model_versions.c
        # Retire the current champion first: the partial unique index allows one.
        await conn.execute(
            sa.update(model_versions)
            .where(c.name == name, c.status == "champion", c.version != version)
            .values(status="retired", shadow=False)
        )
        await self._set(conn, name, version, status="champion", shadow=False, promoted_at=now)
        await self._event(conn, name, version, action, detail, now)

    @staticmethod
    async def _set(conn: AsyncConnection, name: str, version: int, **values: Any) -> None:
        c = model_versions.c
        await conn.execute(
            sa.update(model_versions).where(c.name == name, c.version == version).values(**values)
        )

    @staticmethod
    async def _event(
        conn: AsyncConnection,
        name: str,
        version: int | None,
        action: str,
        detail: str,
        at: datetime,
    ) -> None:
        await conn.execute(
            sa.insert(model_events).values(
                name=name, version=version, action=action, detail=detail, at=at
            )
        )
