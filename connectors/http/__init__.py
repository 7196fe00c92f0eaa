"""The HTTP API of ``arbiter run``: ingest, synchronous decisions, outcomes, decision
lookup, health, metrics, the dashboard and the AsyncAPI document of the Kafka side.

``connectors.http.app.build_api`` assembles it over the running service's parts;
``connectors.http.serve.serve_http`` serves it with uvicorn in the consumer's own event
loop. Kept free of imports here so ``connectors.http.intake`` stays light.
"""
