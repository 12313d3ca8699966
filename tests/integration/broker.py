"""The test session's Kafka brokers, and topic names no two tests share.

Two brokers, each started on free loopback ports when the first test asks
for it and stopped at the end of the session:

- ``kafka_broker``: the embedded broker (Tansu, memory only), for the tests of
  Tansu itself and those not yet run on both brokers;
- ``broker``: parametrised over ``tansu`` and ``kafka`` (Apache Kafka from its
  Maven jars, :mod:`streams.apache_kafka`): a test that takes it runs once on
  each (ids ``[tansu]`` and ``[kafka]``; ``python -m pytest -m kafka`` runs the
  Kafka half alone). Without Java or the jars the Kafka half fails, naming what
  to install: nothing is skipped.

The brokers are shared, so each test works in topics of its own:
``unique_topic("verdicts")``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streams.apache_kafka import KafkaNode
from streams.embedded import EmbeddedBroker

__all__ = [
    "BROKER_GUARANTEES",
    "RunningBroker",
    "broker",
    "kafka_broker",
    "partition_counts",
    "unique_topic",
]

_NOT_IN_TOPIC_NAMES = re.compile(r"[^A-Za-z0-9._-]+")


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[EmbeddedBroker]:
    """The session's embedded Kafka broker; its teardown fails if the broker died."""
    with EmbeddedBroker() as broker:
        yield broker


@pytest.fixture(scope="session")
def apache_kafka() -> Iterator[KafkaNode]:
    """The session's Apache Kafka (one node, KRaft), on free loopback ports."""
    with KafkaNode() as node:
        yield node


@dataclass(frozen=True)
class RunningBroker:
    """A running broker as the tests see it: where it is, and which kind."""

    url: str  # kafka://HOST:PORT
    kind: str  # "tansu" or "kafka", as MXPROBE_BROKER_KIND says it

    @property
    def bootstrap(self) -> str:
        return self.url.removeprefix("kafka://")


@pytest.fixture(scope="session", params=["tansu", pytest.param("kafka", marks=pytest.mark.kafka)])
def broker(request: pytest.FixtureRequest) -> RunningBroker:
    """Each broker in turn: the embedded Tansu, then Apache Kafka."""
    name = "kafka_broker" if request.param == "tansu" else "apache_kafka"
    running: EmbeddedBroker | KafkaNode = request.getfixturevalue(name)
    return RunningBroker(running.url, request.param)


#: ``@pytest.mark.parametrize(("broker", "guarantee"), BROKER_GUARANTEES, indirect=["broker"])``:
#: each guarantee a broker has, once (Tansu: at least once; Kafka: both).
BROKER_GUARANTEES = [
    pytest.param("tansu", "auto", id="tansu-auto"),
    pytest.param("kafka", "exactly_once", marks=pytest.mark.kafka, id="kafka-exactly_once"),
    pytest.param("kafka", "at_least_once", marks=pytest.mark.kafka, id="kafka-at_least_once"),
]


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
