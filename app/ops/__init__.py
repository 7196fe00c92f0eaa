"""Operator actions the CLI calls: I/O shells around pure code (``backtest``, ...)."""
