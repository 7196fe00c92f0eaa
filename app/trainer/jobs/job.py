"""One training run, start to finish, on plain data: the part that does the work.

``run_job`` takes a ``TrainJob`` (labelled decisions already read from the ledger, the
champion's description, the limits) and returns one ``ModelResult`` per model: the
challenger written to the models folder (never registered here), both models' metrics
on the same recent holdout, the verdict and the report. It touches no database and no
broker, so it runs the same in the CLI process (``arbiter train``, with a progress bar)
and in a child process of the background trainer (``app.trainer.service``).

The steps, for a tabular model (``job_tabular``): examples (validate, de-duplicate,
drop unusable labels) → time split (train on older, hold out the newest) → feature rows
in time order → feature selection (mutual information per input column) →
cross-validated, time-bounded search over logistic regression, gradient boosting and a
random forest → refit of the best on all training rows (class and recency weights) →
the champion and the challenger scored on the holdout → verdict (better by the margin?)
→ report. The ticket heads (``job_text``) share one encoder pass: their three heads are
refit together from agent-confirmed labels, on the encoder variant the champion serves
with.

A crash anywhere leaves at most an unregistered version folder behind (written through
a staging folder, so never a half one): the registry only changes in the caller, after
``run_job`` has returned.

What a run takes and gives back (``TrainJob``, ``ModelResult``, ...) is in ``run``; the
common end of both families' runs (the report) in ``conclude``.
"""

from __future__ import annotations

from app.trainer.jobs.job_tabular import run_tabular
from app.trainer.jobs.job_text import run_text
from app.trainer.jobs.run import ModelResult, Progress, TrainJob


def run_job(job: TrainJob, on_progress: Progress | None = None) -> list[ModelResult]:
    say = on_progress or (lambda _msg: None)
    if job.text_group:
        return run_text(job, say)
    return [run_tabular(job, job.target, say)]
