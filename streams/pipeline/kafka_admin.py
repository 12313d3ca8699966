"""Admin requests mxprobe sends to any Kafka-protocol broker: topics and consumer groups.

These work the same on Apache Kafka and on the embedded Tansu; what only
Tansu needs is in :mod:`streams.pipeline.tansu`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from aiokafka.admin import (  # type: ignore[import-untyped, unused-ignore]
    AIOKafkaAdminClient,
    NewTopic,
)
from aiokafka.client import (  # type: ignore[import-untyped, unused-ignore]
    AIOKafkaClient,
    CoordinationType,
)
from aiokafka.errors import (  # type: ignore[import-untyped, unused-ignore]
    CoordinatorNotAvailableError,
    GroupCoordinatorNotAvailableError,
    KafkaError,
    TopicAlreadyExistsError,
)

from streams.errors import BrokerError, ConfigError

#: Seconds a topic just created may take to show its partitions (Kafka elects
#: the leaders first); Tansu shows them at once.
_SETTLE = 10.0

__all__ = [
    "TopicDefinition",
    "answers_metadata",
    "create_topics",
    "group_state",
    "partition_count",
    "transactions_unavailable",
]


async def answers_metadata(bootstrap: str, *, client_id: str = "mxprobe-admin") -> bool:
    """True once the broker at ``HOST:PORT`` accepts a connection and answers a metadata request.

    Args:
        bootstrap: one ``HOST:PORT``.
        client_id: the Kafka client id the request is sent with.
    """
    host, _, port = bootstrap.rpartition(":")
    try:
        # A plain connect first: aiokafka logs an error for every refused connection.
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id=client_id, request_timeout_ms=2000
    )
    try:
        await admin.start()  # bootstraps with a Metadata request
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
    return True


class TopicDefinition(Protocol):
    """What :func:`create_topics` needs of a topic (``pipeline.topology.TopicSpec`` fits)."""

    @property
    def name(self) -> str: ...
    @property
    def partitions(self) -> int: ...
    @property
    def replication(self) -> int: ...
    @property
    def configs(self) -> Mapping[str, str]: ...


async def create_topics(
    bootstrap: str, specs: Iterable[TopicDefinition], *, timeout: float = 30.0
) -> tuple[str, ...]:
    """Create topics with their final partition counts and configs; existing ones are kept.

    Every topic must exist before any client touches it: Tansu auto-creates an
    unknown topic with 4 partitions on a produce *or a metadata request*, and
    has no CreatePartitions request to add partitions later.

    Args:
        bootstrap: ``HOST:PORT[,HOST:PORT…]``, with or without ``kafka://``.
        specs: the topics.
        timeout: seconds for the broker to answer.

    Returns:
        The names of the topics this call created.

    Raises:
        ConfigError: a topic exists with another partition count than asked for.
        BrokerError: the broker cannot be reached or refused to create a topic.
    """
    wanted = {spec.name: spec for spec in specs}
    if not wanted:
        return ()
    servers = bootstrap.removeprefix("kafka://")
    admin = AIOKafkaAdminClient(
        bootstrap_servers=servers.split(","),
        client_id="mxprobe-admin",
        request_timeout_ms=int(timeout * 1000),
    )
    try:
        await admin.start()
        response = await admin.create_topics(
            [
                NewTopic(s.name, s.partitions, s.replication, topic_configs=dict(s.configs))
                for s in wanted.values()
            ]
        )
        created: list[str] = []
        existing: list[str] = []
        for name, code, *message in response.topic_errors:
            if code == 0:
                created.append(name)
            elif code == TopicAlreadyExistsError.errno:
                existing.append(name)
            else:
                detail = message[0] if message and message[0] else f"error code {code}"
                raise BrokerError(
                    f"The Kafka broker at {servers} refused to create topic {name!r}: {detail}."
                )
        # Describe only topics that exist: Tansu answers a metadata request for an
        # unknown topic by creating it (with 4 partitions).
        for topic in await _described(admin, existing) if existing else ():
            spec = wanted[topic["topic"]]
            have = len(topic["partitions"])
            if have != spec.partitions:
                raise ConfigError(
                    f"Topic {spec.name!r} already exists with {have} partitions, not the "
                    f"{spec.partitions} configured; partitions cannot be changed in place: "
                    f"delete the topic or set the partition count to {have}."
                )
    except (KafkaError, OSError, TimeoutError) as exc:
        raise BrokerError(
            f"Could not create topics on the Kafka broker at {servers} ({exc}); check that it "
            "is running and that --broker / MXPROBE_BROKER points at it."
        ) from exc
    finally:
        await admin.close()
    return tuple(created)


async def _described(admin: AIOKafkaAdminClient, topics: list[str]) -> list[dict[str, Any]]:
    """The descriptions of existing ``topics``, once each has its partitions.

    Kafka describes a topic created a moment ago (by another worker, say) with
    no partitions, or with an error, until its leaders are elected: ask again,
    for up to :data:`_SETTLE` seconds.
    """
    deadline = time.monotonic() + _SETTLE
    while True:
        described: list[dict[str, Any]] = await admin.describe_topics(topics)
        settled = all(t["partitions"] and not t.get("error_code") for t in described)
        if settled or time.monotonic() > deadline:
            return described
        await asyncio.sleep(0.1)


async def partition_count(bootstrap: str, topic: str) -> int:
    """How many partitions ``topic`` has; 0 when it does not exist.

    Asks for the list of topics first and describes ``topic`` only if it is
    there: Tansu (and Kafka with topic auto-creation on) would create a topic
    that a metadata request names.

    Raises:
        BrokerError: the broker cannot be reached.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="mxprobe-admin")
    try:
        await admin.start()
        if topic not in await admin.list_topics():
            return 0
        [described] = await _described(admin, [topic])
        return len(described["partitions"])
    except (KafkaError, OSError, TimeoutError) as exc:
        raise BrokerError(
            f"Could not read the topics of the Kafka broker at {bootstrap} ({exc}); check that "
            "it is running and that --broker / MXPROBE_BROKER points at it."
        ) from exc
    finally:
        await admin.close()


async def group_state(bootstrap: str, group: str) -> tuple[str, int]:
    """Consumer group ``group``'s state (``Stable``, ``PreparingRebalance``…) and members.

    ``("", 0)`` for a group the broker does not know, also while Kafka has no
    coordinator for it yet (a fresh broker creates its offsets topic first).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
    except GroupCoordinatorNotAvailableError:
        return "", 0
    finally:
        await admin.close()
    # DescribeGroups: groups = [(error, group_id, state, protocol_type, protocol, members, …)]
    groups = described[0].groups if described else []
    if not groups:
        return "", 0
    state = groups[0][2]
    return (state.decode() if isinstance(state, bytes) else str(state)), len(groups[0][5])


async def transactions_unavailable(bootstrap: str, *, timeout: float = 15.0) -> str | None:
    """Why the broker cannot run Kafka transactions, or None when it can.

    Asks for a transaction coordinator (FindCoordinator), as a transactional
    producer does first: Kafka answers once its transaction log
    (``__transaction_state``) is there, which it creates on the first ask. A
    broker whose transaction log cannot be created (one node with the default
    replication factor of 3) answers "not available" until ``timeout``; one
    without transactions refuses the request.
    """
    client = AIOKafkaClient(bootstrap_servers=bootstrap, client_id="mxprobe-admin")
    deadline = time.monotonic() + timeout
    try:
        await client.bootstrap()
        while True:
            try:
                await client.coordinator_lookup(CoordinationType.TRANSACTION, "mxprobe-probe")
                return None
            except CoordinatorNotAvailableError:
                if time.monotonic() >= deadline:
                    return (
                        f"the broker at {bootstrap} has no transaction coordinator after "
                        f"{timeout:g} s (a single broker needs "
                        "transaction.state.log.replication.factor=1 and "
                        "transaction.state.log.min.isr=1)"
                    )
                await asyncio.sleep(0.2)
            except KafkaError as exc:
                return f"the broker at {bootstrap} refused a transaction coordinator: {exc}"
    except (KafkaError, OSError) as exc:
        return f"the broker at {bootstrap} did not answer: {exc}"
    finally:
        await client.close()
