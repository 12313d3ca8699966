"""One Kafka broker per test session, and topic names no two tests share.

Integration tests that need Kafka take the ``kafka_broker`` fixture (made
visible by ``conftest.py``): the embedded broker (Tansu), started on a free
loopback port when the first test asks for it and stopped at the end of the
session. The broker is memory only and shared, so each test works in topics
of its own: ``unique_topic("verdicts")``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streams.embedded import EmbeddedBroker

__all__ = ["kafka_broker", "partition_counts", "unique_topic"]

_NOT_IN_TOPIC_NAMES = re.compile(r"[^A-Za-z0-9._-]+")


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[EmbeddedBroker]:
    """The session's embedded Kafka broker; its teardown fails if the broker died."""
    with EmbeddedBroker() as broker:
        yield broker


def unique_topic(prefix: str = "test") -> str:
    """A topic name nobody else uses: ``prefix`` (made legal for Kafka) and 12 random hex digits."""
    legal = _NOT_IN_TOPIC_NAMES.sub("-", prefix).strip("-.")[:200] or "test"
    return f"{legal}-{uuid.uuid4().hex[:12]}"


async def partition_counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    """Partitions per topic as the broker's metadata reports them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(topics)}
    finally:
        await admin.close()
