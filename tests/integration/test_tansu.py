"""End offsets on Tansu: ListOffsets(latest) is short, the fetch high watermark is right.

Tansu answers ListOffsets(latest) with the base offset of the newest record
batch + 1, not the last offset + 1. These tests produce known counts to the
session's embedded broker and check that :func:`true_end_offsets` counts
every record, without moving the consumer that asks.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from broker import unique_topic

from streams.embedded import EmbeddedBroker
from streams.pipeline.kafka_admin import create_topics
from streams.pipeline.tansu import true_end_offsets
from streams.pipeline.topology import TopicSpec

pytestmark = pytest.mark.integration

BATCHED, SINGLES = 50, 5  # records produced as one batch, and one at a time


async def produce_known_counts(bootstrap: str, topic: str) -> None:
    """Partition 0: one batch of BATCHED records; 1: SINGLES records one by one; 2: none."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        batch = producer.create_batch()
        for i in range(BATCHED):
            assert batch.append(key=None, value=b"b%d" % i, timestamp=None) is not None
        await (await producer.send_batch(batch, topic, partition=0))
        for i in range(SINGLES):
            await producer.send_and_wait(topic, b"s%d" % i, partition=1)
    finally:
        await producer.stop()


async def test_true_end_offsets_counts_every_record(kafka_broker: EmbeddedBroker) -> None:
    """End offsets equal the records produced, where Tansu's ListOffsets stops at the last batch."""
    topic = unique_topic("ends")
    await create_topics(kafka_broker.bootstrap, [TopicSpec(topic, 3, 1)])
    await produce_known_counts(kafka_broker.bootstrap, topic)
    tps = [TopicPartition(topic, p) for p in range(3)]
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker.bootstrap)
    await consumer.start()
    try:
        listed = await consumer.end_offsets(tps)
        assert listed[tps[0]] < BATCHED  # the deviation this works around
        assert await true_end_offsets(consumer, tps) == {
            tps[0]: BATCHED,
            tps[1]: SINGLES,
            tps[2]: 0,
        }
    finally:
        await consumer.stop()


async def test_true_end_offsets_leaves_the_consumer_where_it_was(
    kafka_broker: EmbeddedBroker,
) -> None:
    """Reading end offsets neither moves an assigned consumer nor swallows its records."""
    topic = unique_topic("position")
    await create_topics(kafka_broker.bootstrap, [TopicSpec(topic, 3, 1)])
    await produce_known_counts(kafka_broker.bootstrap, topic)
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker.bootstrap)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, 7)
        await true_end_offsets(consumer, [tp])
        record = await asyncio.wait_for(consumer.getone(), 10)
        assert (record.offset, record.value) == (7, b"b7")
    finally:
        await consumer.stop()
