"""Kafka in and out: the clients we trust (``client``) and the consume loop (``consume``)."""
