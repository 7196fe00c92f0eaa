"""Webhooks, the pure half: the endpoints of the connectors file (``config``) and which
deliveries a decision owes (``plan``). The deliveries are stored with their decision
(``app.store.outbox``) and sent by the relay (``connectors.webhooks.relay``)."""
