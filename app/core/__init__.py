"""The pure decision core: records in, decisions, dead letters and messages out.

Nothing here does I/O: no broker, no database, no HTTP. The consume loop, ``/v1/decide``,
backtests and tests all call the same functions; the shells around them only read and
write. ``run_batch`` (in ``offline``) runs a whole batch through real models and rules
with nothing else, as a user would to try a batch by hand.
"""
