"""Admin requests to a Kafka broker: readiness, topics created with their final sizes.

They run on each broker (Tansu, Apache Kafka) on loopback, each test in
topics of its own; both auto-create an unknown topic with 4 partitions (the
test Kafka node sets num.partitions=4), so a topic that comes out with
another count was created as asked.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from broker import RunningBroker, partition_counts, unique_topic

from streams.apache_kafka import KafkaNode
from streams.errors import BrokerError, ConfigError
from streams.loopback import free_port
from streams.pipeline.kafka_admin import (
    answers_metadata,
    create_topics,
    partition_count,
    transactions_unavailable,
)

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Spec:
    """A topic to create (the shape of ``pipeline.topology.TopicSpec``)."""

    name: str
    partitions: int
    replication: int = 1
    configs: dict[str, str] = field(default_factory=dict)


async def test_a_running_broker_answers_metadata(broker: RunningBroker) -> None:
    """A broker that runs answers a metadata request."""
    assert await answers_metadata(broker.bootstrap)


async def test_no_broker_answers_no_metadata() -> None:
    """Where nothing listens, the answer is False, not an error."""
    assert not await answers_metadata(f"127.0.0.1:{free_port()}")


async def test_create_topics_honours_partition_counts(broker: RunningBroker) -> None:
    """Each topic gets the partition count asked for, not the broker's default of 4."""
    specs = [
        Spec(unique_topic("one"), 1),
        Spec(unique_topic("three"), 3),
        Spec(unique_topic("changelog"), 8, configs={"cleanup.policy": "compact"}),
    ]
    created = await create_topics(broker.url, specs)
    assert sorted(created) == sorted(s.name for s in specs)
    counts = await partition_counts(broker.bootstrap, [s.name for s in specs])
    assert counts == {s.name: s.partitions for s in specs}


async def test_create_topics_keeps_existing_topics(broker: RunningBroker) -> None:
    """Creating topics that exist (same partition count) creates nothing and is no error."""
    old, new = Spec(unique_topic("old"), 2), Spec(unique_topic("new"), 2)
    await create_topics(broker.bootstrap, [old])
    assert await create_topics(broker.bootstrap, [old, new]) == (new.name,)


async def test_create_topics_rejects_an_existing_topic_of_another_size(
    broker: RunningBroker,
) -> None:
    """A topic that exists with other partitions is a configuration error naming both counts."""
    name = unique_topic("resized")
    await create_topics(broker.bootstrap, [Spec(name, 2)])
    with pytest.raises(ConfigError, match=rf"{name}' already exists with 2 partitions, not the 5"):
        await create_topics(broker.bootstrap, [Spec(name, 5)])


async def test_create_topics_without_a_broker_says_so() -> None:
    """An unreachable broker is a BrokerError naming the address and the setting to check."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(BrokerError, match=rf"127\.0\.0\.1:{port}.*MXPROBE_BROKER"):
        await create_topics(f"127.0.0.1:{port}", [Spec("never", 1)], timeout=2)


async def test_partition_count_of_a_topic_and_of_none(broker: RunningBroker) -> None:
    """The partitions of a topic; 0 for a topic nobody created, which stays uncreated."""
    name, missing = unique_topic("counted"), unique_topic("missing")
    await create_topics(broker.bootstrap, [Spec(name, 3)])
    assert await partition_count(broker.bootstrap, name) == 3
    assert await partition_count(broker.bootstrap, missing) == 0
    assert await partition_counts(broker.bootstrap, [name]) == {name: 3}
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        assert missing not in await admin.list_topics()
    finally:
        await admin.close()


@pytest.mark.kafka
async def test_the_test_kafka_runs_transactions(apache_kafka: KafkaNode) -> None:
    """The single-node Kafka of the tests has a transaction coordinator (auto: exactly once)."""
    assert await transactions_unavailable(apache_kafka.bootstrap) is None


@pytest.mark.kafka
def test_a_single_node_with_the_default_transaction_log_has_no_coordinator() -> None:
    """One node cannot hold a transaction log of 3 replicas (Kafka's default): the
    coordinator never comes, and the answer says so and what to set."""
    overrides = {"transaction.state.log.replication.factor": "3"}
    with KafkaNode(overrides=overrides) as node:
        reason = asyncio.run(transactions_unavailable(node.bootstrap, timeout=3))
    assert reason is not None
    assert "no transaction coordinator after 3 s" in reason
    assert "transaction.state.log.replication.factor=1" in reason


async def test_transactions_without_a_broker_say_so() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # a port nothing listens on
        port = sock.getsockname()[1]
        reason = await transactions_unavailable(f"127.0.0.1:{port}", timeout=3)
    assert reason is not None and "did not answer" in reason
