"""Narrow workarounds for the embedded Tansu broker, used only when talking to it.

BROKERS.md #1: Tansu answers ListOffsets(latest) with the base offset of the
newest record batch + 1 instead of the last offset + 1. Faust builds the
"highwater" of every changelog partition from ListOffsets before recovering a
table, so on Tansu recovery stops early and loses the last batch of updates.
Fetch responses carry the right high watermark, so the end offset is taken as
the larger of the two (:func:`streams.embedded.true_end_offsets`).

Tansu also holds every Fetch for its whole max wait, even when data arrives
meanwhile: the worker's consumer waits :data:`~streams.embedded.FETCH_WAIT_MS`
instead of Faust's fixed 1,500 ms.

Apache Kafka never sees any of this: :class:`EmbeddedApp` is only built when
mxprobe runs its own embedded broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust
from aiokafka import TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from faust.types import TP

from streams.embedded import FETCH_WAIT_MS, true_end_offsets

__all__ = ["EmbeddedApp"]


class _TansuConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        # A Fetch waits its whole max wait on Tansu, data or not (FETCH_WAIT_MS);
        # Faust passes a fixed 1,500 ms. aiokafka reads this attribute at start().
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_WAIT_MS
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        # BROKERS.md #1: ListOffsets(latest) is short on Tansu; Faust's table
        # recovery would stop before the last batch of changelog records.
        tps = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        offsets = await true_end_offsets(self._ensure_consumer(), tps)
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
