"""Fixtures shared by the integration tests."""

from broker import apache_kafka, broker, kafka_broker

__all__ = ["apache_kafka", "broker", "kafka_broker"]
