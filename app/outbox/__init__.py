"""Webhooks through an outbox: endpoints config, the pure delivery planner, the relay
that sends stored deliveries, and the admin functions of ``arbiter deliveries``.

``config`` and ``plan`` are pure; ``relay`` and ``admin`` do I/O. Nothing is imported
here so that importing the pure modules never pulls in httpx or SQLAlchemy.
"""
