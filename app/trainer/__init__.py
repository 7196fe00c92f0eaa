"""The trainer: outcomes in, better models out (issue 5).

``jobs/`` does the work on plain data (datasets, fitting, search, judging, first
models) and ``report/`` draws a run's HTML report: both pure. Around them the I/O shell:
``service.py`` (when to train, the lease, registering), ``child.py`` (the worker
process), ``monitor.py`` (drift of the champions from the ledger) and ``bootstrap.py``
(first champions at start-up).
"""
