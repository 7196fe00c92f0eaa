"""Arbiter: event-driven decisioning middleware (pipeline, features, inference, rules, store, CLI)."""
