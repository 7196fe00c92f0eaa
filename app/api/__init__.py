"""The HTTP API of ``arbiter run``: ingest, synchronous decisions, outcomes, decision
lookup, health, metrics and the AsyncAPI document of the Kafka side.

``app.api.app.build_api`` assembles it from the running ``Components``;
``app.api.serve.serve_http`` serves it with uvicorn in the consumer's own event loop.
Kept free of imports here so ``app.api.intake`` (pure) stays light.
"""
