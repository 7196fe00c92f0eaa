"""The trainer's work on plain data: datasets, fitting, search, judging, drift references
and first models. Pure: no database, no broker (``app.trainer.service`` reads and
registers around it)."""
