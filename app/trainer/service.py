"""The trainer at work: when to train, where the work runs, and what the registry learns.

``Trainer.tick`` (every ``ARBITER_TRAINER_POLL_S``, inside ``arbiter run`` or alone as
``arbiter trainer``) takes the ``trainer`` lease — one trainer at a time across every
process — and trains each model that has a reason to:

- ``new_outcomes``: ``ARBITER_TRAINER_MIN_NEW`` labelled outcomes since its last run;
- ``schedule``: ``ARBITER_TRAINER_EVERY_H`` since its last run;
- ``drift``: the monitor's signals past their thresholds, with at least
  ``ARBITER_DRIFT_MIN_NEW`` new labelled outcomes to learn from;
- ``manual``: ``arbiter train NAME`` (``Trainer.train`` directly, in that process).

The work itself (``job.run_job``) runs in a spawned child process with a lower priority
and capped threads, so the consumer never waits for it; the parent reads the dataset
before and changes the registry after. A child that dies leaves the registry as it was
(the run is closed ``failed``); a parent that dies leaves its run ``running`` until the
next lease holder closes it ``abandoned``; a parent that is stopped (SIGTERM) terminates
its child and closes the run ``abandoned`` itself.

The lease lasts ``ARBITER_TRAINER_LEASE_S`` and is renewed every third of that for as
long as it is held, so a holder that died is replaced within that time. A holder that
finds on renewal that another process took the lease (it was frozen or cut off from the
database for longer than the lease) stops its run at once and registers nothing: two
trainers never register versions of one model side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.declarations import served_by
from app.declarations.spec import DeclaredModel
from app.settings import Settings
from app.store.outcomes import OutcomeStore
from app.store.registry import ModelRegistry
from app.store.training import TrainingRun, TrainingStore
from app.trainer import monitor
from app.trainer.jobs.job import run_job
from app.trainer.jobs.run import Limits, ModelResult, Record, TrainJob, models_of, target_of
from app.values import ModelMeta

log = structlog.get_logger("arbiter.trainer")

LEASE = "trainer"
CHILD_NICENESS = 10  # the consumer keeps priority over training
Progress = Callable[[str], None]


class TrainingCrashed(RuntimeError):
    """The training process died or raised; the run is recorded as failed."""


LEASE_LOST = (
    "another trainer took the lease while this run was in progress (this process was "
    "stalled or cut off from the database for longer than ARBITER_TRAINER_LEASE_S); the "
    "run was stopped and nothing registered"
)
STOPPED = "the trainer was stopped (shutdown) before the run finished; nothing registered"


def limits_from(settings: Settings) -> Limits:
    return Limits(
        budget_s=settings.trainer.budget_s,
        margin=settings.trainer.margin,
        review_rate=settings.trainer.review_rate,
        max_rows=settings.trainer.max_rows,
        half_life_days=settings.trainer.half_life_days or None,
    )


def drift_limits(settings: Settings) -> monitor.DriftLimits:
    return monitor.DriftLimits(
        window=settings.drift.window,
        psi_threshold=settings.drift.psi_threshold,
        auc_drop=settings.drift.auc_drop,
    )


@dataclass(frozen=True)
class RunOutcome:
    """What a run did to one model, as the registry now records it."""

    model: str
    run_id: int
    status: str  # promoted | kept | skipped | failed | abandoned
    reason: str
    version: int | None = None
    report: str = ""


class Trainer:
    def __init__(self, settings: Settings, engine: AsyncEngine, *, holder: str = "") -> None:
        self.settings = settings
        self.engine = engine
        self.registry = ModelRegistry(engine)
        self.outcomes = OutcomeStore(engine)
        self.store = TrainingStore(engine)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.limits = limits_from(settings)
        self.lease_ttl = timedelta(seconds=settings.trainer.lease_s)
        # Every model the served types declare (checked like at start-up).
        self.catalog: dict[str, DeclaredModel] = served_by(settings).catalog()
        self._lost: asyncio.Event | None = None  # set while the lease is held and renewed
        self._standing_by: str | None = None  # the other holder reported last

    # --- when ------------------------------------------------------------------------

    async def due(self) -> dict[str, str]:
        """Targets with a reason to train now: target -> trigger."""
        s = self.settings
        found: dict[str, str] = {}
        for name, declared in self.catalog.items():
            event_type = declared.event_type
            target = target_of(name, self.catalog)
            if target in found:
                continue
            last = await self._last_counted(name)
            seen = last.outcomes_seen if last else 0
            new = await self.store.labelled_since(event_type, seen)
            if new >= s.trainer.min_new:
                found[target] = "new_outcomes"
                continue
            if s.trainer.every_h > 0 and new >= 1:
                since = last.started_at if last else None
                if since is None or datetime.now(UTC) - since >= timedelta(hours=s.trainer.every_h):
                    found[target] = "schedule"
                    continue
            if new >= s.drift.min_new:
                status = await monitor.measure(
                    self.engine, self.registry, name, drift_limits(s), declared
                )
                if status.drifting:
                    log.info("drift", model=name, reasons=list(status.reasons))
                    found[target] = "drift"
        return found

    async def _last_counted(self, name: str) -> TrainingRun | None:
        """The run new outcomes are counted from: the newest that ended, whatever the
        result, except ``abandoned`` (stopped or lost before it learnt anything: the
        outcomes it would have used are still to be trained on)."""
        for run in await self.store.runs(name, limit=50):
            if run.status not in ("running", "abandoned"):
                return run
        return None

    async def tick(self) -> list[RunOutcome]:
        """One look: train whatever is due (if this process gets the lease)."""
        if not await self._take():
            await self._stand_by()
            return []
        done: list[RunOutcome] = []
        async with self._holding() as lost:
            for target, trigger in (await self.due()).items():
                if lost.is_set():
                    break
                done += await self.train(target, trigger)
        return done

    async def _take(self) -> bool:
        before = await self.store.holder(LEASE)
        if not await self.store.acquire(LEASE, self.holder, self.lease_ttl):
            return False
        if before is not None and before[0] != self.holder and before[1] < datetime.now(UTC):
            log.warning(
                "took over the trainer lease from a holder that stopped renewing it",
                previous=before[0],
                expired_at=before[1].isoformat(),
                holder=self.holder,
            )
        return True

    async def _stand_by(self) -> None:
        """Say once per other holder that it trains, so this process waits."""
        found = await self.store.holder(LEASE)
        if found is None or found[0] in (self._standing_by, self.holder):
            return  # released meanwhile, or said already
        log.info(
            "another trainer holds the lease; standing by",
            holder=found[0],
            expires_at=found[1].isoformat(),
            poll_s=self.settings.trainer.poll_s,
        )
        self._standing_by = found[0]

    @contextlib.asynccontextmanager
    async def _holding(self) -> AsyncIterator[asyncio.Event]:
        """Keep the lease just taken renewed while the body runs, release it after. The
        event yielded is set when a renewal finds that another process took it."""
        lost = asyncio.Event()
        self._lost = lost
        renewing = asyncio.create_task(self._renew(lost), name="arbiter-trainer-lease")
        try:
            yield lost
        finally:
            self._lost = None
            renewing.cancel()
            if not lost.is_set():
                await self.store.release(LEASE, self.holder)

    async def _renew(self, lost: asyncio.Event) -> None:
        period = self.lease_ttl.total_seconds() / 3
        while True:
            await asyncio.sleep(period)
            try:
                held = await self.store.acquire(LEASE, self.holder, self.lease_ttl)
            except Exception as exc:  # the lease runs on; try again before it ends
                log.warning("trainer lease renewal failed; trying again", error=str(exc))
                continue
            if not held:
                log.error("trainer lease lost to another process", holder=self.holder)
                lost.set()
                return

    async def run_forever(self, stop: asyncio.Event) -> None:
        """``tick`` every poll interval until ``stop``; errors are logged, never fatal."""
        log.info("trainer started", poll_s=self.settings.trainer.poll_s, holder=self.holder)
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("trainer tick failed; trying again at the next poll")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.trainer.poll_s)

    # --- how -------------------------------------------------------------------------

    async def train(
        self,
        target: str,
        trigger: str,
        *,
        in_process: bool = False,
        on_progress: Progress | None = None,
    ) -> list[RunOutcome]:
        """Train ``target`` (a tabular model's name, or an event type for its text models)
        now and record the result.

        The caller holds the lease (``tick``) or is the operator (``arbiter train``,
        which takes it here)."""
        names = models_of(target, self.catalog)
        say = on_progress or (lambda msg: log.info("training", target=target, step=msg))
        if self._lost is not None:  # inside tick: the lease is held and renewed already
            return await self._train(target, names, trigger, self._lost, in_process, say)
        if not await self._take():
            found = await self.store.holder(LEASE)
            who = found[0] if found else "another process"
            raise RuntimeError(
                f"{who} is training right now (lease {LEASE!r}); try again when it is done"
            )
        async with self._holding() as lost:
            return await self._train(target, names, trigger, lost, in_process, say)

    async def _train(
        self,
        target: str,
        names: tuple[str, ...],
        trigger: str,
        lost: asyncio.Event,
        in_process: bool,
        say: Progress,
    ) -> list[RunOutcome]:
        for name in names:
            if abandoned := await self.store.abandon_stale(name):
                say(f"{name}: closed {abandoned} run(s) left unfinished by a stopped process")
        watermark = await self.store.outcome_watermark()
        run_ids = {n: await self.store.open_run(n, trigger, self.holder, watermark) for n in names}
        event_type = self.catalog[names[0]].event_type
        say(f"reading labelled decisions of {event_type} from the ledger")
        labelled = await self.outcomes.labelled(event_type)
        champions: dict[str, ModelMeta | None] = {}
        for n in names:
            record = await self.registry.champion(n)
            champions[n] = record.meta if record else None
        job = TrainJob(
            target=target,
            trigger=trigger,
            run_ids=run_ids,
            records=tuple(
                Record(r.event_id, r.event_type, r.occurred_at, r.payload, r.labels)
                for r in labelled
            ),
            champions=champions,
            models_dir=self.settings.resolved_models_dir,
            reports_dir=self.settings.reports_dir,
            declared={n: self.catalog[n] for n in names},
            limits=self.limits,
        )
        work = asyncio.create_task(self._execute(job, in_process=in_process, say=say))
        losing = asyncio.create_task(lost.wait())
        try:
            await asyncio.wait({work, losing}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # shutdown: the child is terminated, the run closed
            work.cancel()
            await asyncio.wait({work})
            with contextlib.suppress(Exception):
                await asyncio.shield(self._close_all(run_ids, "abandoned", STOPPED))
            raise
        finally:
            losing.cancel()
        if not work.done():
            work.cancel()
            await asyncio.wait({work})
        if work.cancelled() or not await self.store.acquire(LEASE, self.holder, self.lease_ttl):
            # The lease is someone else's: registering now could race their run.
            lost.set()
            log.error("training run stopped: lease lost", target=target)
            return await self._close_all(run_ids, "abandoned", LEASE_LOST)
        try:
            results = work.result()
        except Exception as exc:
            log.error("training failed", target=target, error=str(exc))
            reason = f"training failed: {type(exc).__name__}: {exc}"
            return await self._close_all(run_ids, "failed", reason)
        return [await self._record(result, say) for result in results]

    async def _close_all(
        self, run_ids: dict[str, int], status: str, reason: str
    ) -> list[RunOutcome]:
        out = []
        for n, run_id in run_ids.items():
            await self.store.close_run(run_id, status, reason=reason)
            metrics.TRAINER_RUNS.labels(model=n, result=status).inc()
            out.append(RunOutcome(n, run_id, status, reason))
        return out

    async def _execute(
        self, job: TrainJob, *, in_process: bool, say: Progress
    ) -> list[ModelResult]:
        if in_process:
            return await asyncio.get_running_loop().run_in_executor(None, run_job, job, say)
        from app.trainer import child

        s = self.settings
        context = multiprocessing.get_context("spawn")
        receive, send = context.Pipe(duplex=False)
        process = context.Process(
            target=child.main,
            args=(job, s.trainer.threads, CHILD_NICENESS, s.log.format, s.log.level, send),
            name=f"arbiter-trainer-{job.target}",
            daemon=True,
        )
        process.start()
        send.close()
        try:
            # Readable when the result arrives, and at end-of-file when the child died.
            readable = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_reader(receive.fileno(), readable.set)
            try:
                await readable.wait()
            finally:
                loop.remove_reader(receive.fileno())
            try:
                kind, payload = receive.recv()
            except EOFError:
                await asyncio.get_running_loop().run_in_executor(None, process.join, 10)
                raise TrainingCrashed(
                    f"the training process exited with code {process.exitcode} before "
                    "finishing; nothing was registered"
                ) from None
        finally:
            if process.is_alive():  # cancelled (shutdown): the half-done work is dropped
                process.terminate()
            await asyncio.get_running_loop().run_in_executor(None, process.join, 10)
            receive.close()
        if kind != "ok":
            raise TrainingCrashed(str(payload))
        results: list[ModelResult] = payload
        return results

    async def _record(self, result: ModelResult, say: Progress) -> RunOutcome:
        """Register the challenger, promote it if it won, close the run."""
        name, run_id = result.model, result.run_id
        if result.status == "skipped" or result.challenger is None:
            await self.store.close_run(
                run_id, "skipped", reason=result.reason, summary=result.summary
            )
            metrics.TRAINER_RUNS.labels(model=name, result="skipped").inc()
            say(f"{name}: skipped — {result.reason}")
            return RunOutcome(name, run_id, "skipped", result.reason)
        meta = result.challenger
        await self.registry.register(meta, detail=f"trained by run {run_id}: {result.reason}")
        status = "kept"
        if result.promote:
            await self.registry.promote(name, meta.version, detail=f"run {run_id}: {result.reason}")
            status = "promoted"
        elif self.settings.trainer.shadow_kept:
            await self.registry.set_shadow(name, meta.version, True)
        await self.store.close_run(
            run_id,
            status,
            reason=result.reason,
            summary=result.summary,
            champion_version=result.champion_version,
            challenger_version=meta.version,
            champion_metrics=result.champion_metrics,
            challenger_metrics=result.challenger_metrics,
            report=result.report,
        )
        metrics.TRAINER_RUNS.labels(model=name, result=status).inc()
        log.info(
            "training run finished",
            model=name,
            run=run_id,
            result=status,
            version=meta.tag,
            reason=result.reason,
            report=result.report,
        )
        say(f"{name}: {meta.tag} {status} — {result.reason}")
        return RunOutcome(name, run_id, status, result.reason, meta.version, result.report)
