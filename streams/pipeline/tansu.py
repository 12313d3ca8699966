"""Narrow workarounds for the embedded Tansu broker, used only when talking to it.

BROKERS.md #1: Tansu answers ListOffsets(latest) with the base offset of the
newest record batch + 1 instead of the last offset + 1. Faust builds the
"highwater" of every changelog partition from ListOffsets before recovering a
table, so on Tansu recovery stops early and loses the last batch of updates.
Fetch responses carry the right high watermark, so the end offset is taken as
the larger of the two (see :func:`true_end_offsets`).

Apache Kafka never sees any of this: :class:`EmbeddedApp` is only built when
mxprobe runs its own embedded broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from faust.types import TP

__all__ = ["EmbeddedApp", "true_end_offsets"]


async def true_end_offsets(
    bootstrap: str, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """End offsets (last offset + 1) that are right on Tansu too.

    Takes ``max(ListOffsets latest, fetch high watermark)``: a separate short-lived
    consumer fetches from the last reported offset with ``fetch_max_wait_ms=10``
    and ``min_bytes=1`` (a Fetch with max_wait 0 returns nothing on Tansu) and
    reads the high watermark from the response.
    """
    wanted = list(partitions)
    if not wanted:
        return {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
        fetch_min_bytes=1,
        max_partition_fetch_bytes=1024,
    )
    await consumer.start()
    try:
        consumer.assign(wanted)
        listed = await consumer.end_offsets(wanted)
        for tp in wanted:
            consumer.seek(tp, max(0, listed[tp] - 1))
        await consumer.getmany(*wanted, timeout_ms=200)
        result: dict[TopicPartition, int] = {}
        for tp in wanted:
            highwater = consumer.highwater(tp)
            result[tp] = max(listed[tp], highwater if highwater is not None else 0)
        return result
    finally:
        await consumer.stop()


class _TansuConsumerThread(AIOKafkaConsumerThread):
    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        # BROKERS.md #1: ListOffsets(latest) is short on Tansu; Faust's table
        # recovery would stop before the last batch of changelog records.
        bootstrap = ",".join(
            f"{url.host}:{url.port or 9092}" for url in self.app.conf.broker_consumer
        )
        tps = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        offsets = await true_end_offsets(bootstrap, tps)
        return {TP(tp.topic, tp.partition): offset for tp, offset in offsets.items()}


class _TansuConsumer(Consumer):
    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _TansuConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _TansuTransport(Transport):
    Consumer = _TansuConsumer


class EmbeddedApp(faust.App):
    """A Faust app whose consumer reads end offsets the way Tansu needs."""

    def _new_transport(self) -> Any:
        return _TansuTransport(self.conf.broker_consumer, self)
