"""The common end of every training run: the report written, the result described.

``job_tabular`` and ``job_text`` judge their models and hand a ``Judgement`` to
``conclude``, which writes the run's HTML report (``app.trainer.report``) and returns
the ``ModelResult`` the caller registers.
"""

from __future__ import annotations

from typing import Any

from app.trainer.jobs.dataset import Split
from app.trainer.jobs.run import Judgement, ModelResult, Progress, TrainJob
from app.trainer.report.report import ReportData, write_report


def windows(split: Split) -> dict[str, Any]:
    return {
        "train_window": list(split.train_window),
        "holdout_window": list(split.holdout_window),
        "n_train": len(split.train),
        "n_holdout": len(split.holdout),
    }


def conclude(job: TrainJob, found: Judgement, say: Progress) -> ModelResult:
    """Write the run's report and describe the result for the caller to register."""
    say(f"{found.name}: writing the report")
    split = found.split
    report = write_report(
        job.reports_dir / found.name / f"run-{found.run_id}",
        ReportData(
            model=found.name,
            run_id=found.run_id,
            trigger=job.trigger,
            decision="promoted" if found.promote else "kept",
            reason=found.reason,
            champion_version=found.champion.version if found.champion else None,
            challenger_version=found.challenger.version,
            train_window=split.train_window,
            holdout_window=split.holdout_window,
            n_train=len(split.train),
            n_holdout=len(split.holdout),
            cleaning=found.cleaning,
            candidates=found.candidates,
            champion_metrics=found.champion_metrics or {},
            challenger_metrics=found.challenger_metrics,
            curves=found.curves,
            importances=found.importances,
            confusions=found.confusions,
        ),
    )
    return ModelResult(
        found.name,
        found.run_id,
        "trained",
        found.reason,
        promote=found.promote,
        challenger=found.challenger,
        champion_version=found.champion.version if found.champion else None,
        champion_metrics=found.champion_metrics or {},
        challenger_metrics=found.challenger_metrics,
        summary=found.summary,
        report=str(report),
    )
