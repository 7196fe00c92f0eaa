"""Arbiter: event-driven decisioning middleware.

The core: pipeline, features, inference, rules engine, store, CLI.
"""
