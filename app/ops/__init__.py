"""Operator actions the CLI calls, each a thin I/O shell over the store and pure code:
models, webhook deliveries, API keys, the database, rule backtests."""
