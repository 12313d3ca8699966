"""Fixtures shared by the integration tests."""

from broker import kafka_broker

__all__ = ["kafka_broker"]
