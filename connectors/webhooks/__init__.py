"""Webhooks out: the signing HTTP client (``client``) and the outbox relay that sends
stored deliveries with retries and backoff (``relay``)."""
