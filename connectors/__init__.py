"""Adapters to the outside world: Kafka (aiokafka), the embedded Tansu broker."""
