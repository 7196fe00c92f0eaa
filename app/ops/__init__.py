"""Operator actions the CLI calls: models, deliveries, API keys, backtests."""
