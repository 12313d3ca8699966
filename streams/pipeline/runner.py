"""Running the pipeline: a broker (embedded unless configured), topics, the worker.

:class:`PipelineRun` is what ``mxprobe worker``, ``mxprobe run`` and the
integration tests share: it starts the embedded broker when no broker URL is
set, creates every topic up front with its final partition count, and runs
the Faust app in the current event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from streams.core.address import SyntaxProblem, parse_address
from streams.core.host_state import HostState
from streams.embedded import EmbeddedBroker
from streams.errors import CodecError
from streams.pipeline.app import Pipeline
from streams.pipeline.codecs import decode, decode_any, encode
from streams.pipeline.exactly_once import exactly_once
from streams.pipeline.inputs import InputRequest
from streams.pipeline.kafka_admin import create_topics, partition_count, transactions_unavailable
from streams.pipeline.records import (
    AddressRequest,
    DeadLetter,
    DomainTask,
    DomainTasks,
    HostTask,
    HostTasks,
    RetryEvent,
    VerdictRecord,
)
from streams.pipeline.tables import HOST_STATE_PREFIX
from streams.pipeline.tansu import on_tansu, true_end_offsets
from streams.settings import Settings
from streams.verifier import Verifier

__all__ = [
    "PipelineRun",
    "partition_key",
    "produce_requests",
    "read_host_states",
    "read_verdicts",
]


#: A plain ASCII host name (LDH labels, RFC 1123 §2.1): its key needs no IDNA.
_ASCII_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}"
)


def partition_key(email: str, allowed_tlds: Iterable[str] = ()) -> bytes:
    """The input key of an address: its ASCII domain (so intake keeps domains together).

    Unparsable addresses are keyed by whatever follows the last ``@``.
    """
    domain = email.rpartition("@")[2]
    if domain.isascii() and _ASCII_DOMAIN.fullmatch(domain):
        # What parsing would give (its ASCII domain, lower case), at a
        # fraction of the cost: the submitting side of a large run pays it.
        return domain.lower().encode()
    parsed = parse_address(email, allowed_tlds=allowed_tlds)
    if isinstance(parsed, SyntaxProblem):
        return domain.strip().lower().encode("utf-8", "surrogateescape")
    return parsed.ascii_domain.encode()


async def produce_requests(
    bootstrap: str,
    topic: str,
    requests: Iterable[InputRequest],
    *,
    allowed_tlds: Iterable[str] = (),
    on_sent: Callable[[AddressRequest], None] | None = None,
) -> list[AddressRequest]:
    """Send ``requests`` to ``topic`` as Avro AddressRequests keyed by domain."""
    tlds = tuple(allowed_tlds)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=262_144)
    await producer.start()
    sent: list[AddressRequest] = []
    try:
        for item in requests:
            request = AddressRequest(
                request_id=item.request_id,
                email=item.email,
                submitted_at=datetime.now(tz=UTC),
                source=item.source,
                max_age_s=item.max_age_s,
                attributes=item.attributes,
            )
            await producer.send(topic, key=partition_key(item.email, tlds), value=encode(request))
            sent.append(request)
            if on_sent is not None:
                on_sent(request)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def _records(
    bootstrap: str,
    topic: str,
    *,
    from_beginning: bool = True,
    to_end: bool = False,
    idle_ms: int = 500,
    tansu: bool = False,
    committed: bool = True,
) -> AsyncGenerator[ConsumerRecord, None]:
    """The records of ``topic``, in order per partition, read by a consumer of no group.

    Args:
        bootstrap: ``HOST:PORT[,HOST:PORT…]``.
        topic: the topic.
        from_beginning: start at its oldest record, else at its end (records to come).
        to_end: stop once every partition is read up to the end it had when
            reading started; a topic nobody has created yet has no records.
            Else follow the topic until the caller closes or cancels the generator.
        idle_ms: how long one fetch waits for records.
        tansu: the broker is Tansu: its end offsets are taken the way that is
            right there (:func:`~streams.pipeline.tansu.true_end_offsets`).
        committed: read committed records only (``read_committed``: in
            exactly-once, what the pipeline committed; on Tansu, everything).
    """
    if to_end and not from_beginning:
        raise ValueError("A topic is read to its end from its beginning.")
    consumer = AIOKafkaConsumer(
        *(() if to_end else (topic,)),  # to its end: assigned below, partition by partition
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        isolation_level="read_committed" if committed else "read_uncommitted",
    )
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] | None = None
        if to_end:
            # Asked, not taken from the consumer's first metadata: Kafka's names no
            # topic for a consumer without a subscription (Tansu's names them all).
            count = await partition_count(bootstrap.split(",")[0], topic)
            partitions = [TopicPartition(topic, p) for p in range(count)]
            if not partitions:
                await asyncio.sleep(0)  # let the consumer's start finish before its stop
                return
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            if tansu:
                ends = await true_end_offsets(consumer, partitions)
            else:
                ends = dict(await consumer.end_offsets(partitions))
        while ends is None or await _behind(consumer, ends):
            batches = await consumer.getmany(timeout_ms=idle_ms, max_records=10_000)
            for messages in batches.values():
                for message in messages:
                    yield message
    finally:
        await consumer.stop()


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    """Whether ``consumer`` has yet to read up to ``ends`` on some partition."""
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


async def read_verdicts(
    bootstrap: str,
    topic: str,
    *,
    from_beginning: bool = True,
    idle_ms: int = 500,
    committed: bool = True,
    to_end: bool = False,
    tansu: bool = False,
) -> AsyncGenerator[VerdictRecord, None]:
    """Every verdict on ``topic`` (from the beginning or from now), until cancelled, or
    (``to_end``) up to the end the topic had when reading started (``tansu``: the
    broker is Tansu, whose end offsets need a workaround).

    ``committed``: only those the pipeline committed (``read_committed``); in
    exactly-once, the others may be aborted copies.
    """
    records = _records(
        bootstrap,
        topic,
        from_beginning=from_beginning,
        idle_ms=idle_ms,
        committed=committed,
        to_end=to_end,
        tansu=tansu,
    )
    async with contextlib.aclosing(records):
        async for message in records:
            try:
                verdict = decode(message.value, VerdictRecord)
            except CodecError:
                continue  # not a verdict this version can read: skip it
            yield verdict


async def read_dead_letters(bootstrap: str, topic: str) -> AsyncGenerator[str, None]:
    """The request id of every dead letter on ``topic`` whose original event names one."""
    records = _records(bootstrap, topic)
    async with contextlib.aclosing(records):
        async for message in records:
            for request_id in _dead_request_ids(message.value):
                yield request_id


def _dead_request_ids(value: bytes) -> tuple[str, ...]:
    """The request ids inside a dead letter's original event, if they can be read."""
    try:
        letter = decode(value, DeadLetter)
        event = decode_any(letter.value, _CARRY_REQUESTS)
    except CodecError:
        return ()
    if isinstance(event, AddressRequest):
        return (event.request_id,)
    if isinstance(event, DomainTask):
        return (event.request.request_id,)
    if isinstance(event, DomainTasks):
        return tuple(task.request.request_id for task in event.tasks)
    if isinstance(event, HostTask):
        return (event.domain_task.request.request_id,)
    if isinstance(event, HostTasks):
        return tuple(task.domain_task.request.request_id for task in event.tasks)
    if isinstance(event, RetryEvent):
        return (event.host_task.domain_task.request.request_id,)
    return ()


#: The events a dead letter may hold that carry request ids.
_CARRY_REQUESTS = (AddressRequest, DomainTask, DomainTasks, HostTask, HostTasks, RetryEvent)


async def read_host_states(
    bootstrap: str, topic: str, *, tansu: bool = False
) -> dict[str, HostState]:
    """Every mail host's budget and health, as the ``hosts`` table's changelog ``topic`` has them.

    Reads the changelog from the beginning to its end (``tansu``: the broker is
    Tansu, whose end offsets need a workaround) and keeps the newest value of
    each ``host:`` key; a tombstone removes it.
    """
    states: dict[str, HostState] = {}
    prefix = HOST_STATE_PREFIX.encode()
    records = _records(bootstrap, topic, to_end=True, tansu=tansu)
    async with contextlib.aclosing(records):
        async for message in records:
            key = message.key or b""
            if not key.startswith(prefix):
                continue
            host = key[len(prefix) :].decode("utf-8", "replace")
            if message.value is None:
                states.pop(host, None)
            else:
                states[host] = HostState.from_dict(json.loads(message.value))
    return states


class PipelineRun:
    """A broker (embedded unless ``settings.broker``), its topics, and a running worker."""

    def __init__(
        self,
        settings: Settings,
        make_verifier: Callable[..., Verifier],
        *,
        start_worker: bool = True,
    ) -> None:
        self.settings = settings
        self._make_verifier = make_verifier
        self._start_worker = start_worker
        self.broker: EmbeddedBroker | None = None
        self.pipeline: Pipeline | None = None
        self.bootstrap = ""
        self.on_tansu = False  # the broker is Tansu, so its workarounds apply (once entered)
        self.started_in = 0.0  # seconds until the worker had joined its group
        self.dead_lettered: set[str] = set()  # request ids of the last verify() in the DLQ

    async def __aenter__(self) -> Self:
        started = time.monotonic()
        url = self.settings.broker
        if url is None:
            self.broker = EmbeddedBroker()
            await self.broker.astart()
            url = self.broker.url
        self.bootstrap = url.removeprefix("kafka://")
        self.on_tansu = on_tansu(
            embedded=self.broker is not None, broker_kind=self.settings.broker_kind
        )
        guarantee = self.settings.processing_guarantee
        try:
            transactions = None
            if guarantee == "exactly_once" and not self.on_tansu:
                transactions = await transactions_unavailable(self.bootstrap)
            self.pipeline = pipeline = Pipeline(
                self.settings,
                self._make_verifier,
                broker=url,
                tansu=self.on_tansu,
                exactly_once=exactly_once(
                    guarantee, tansu=self.on_tansu, transactions=transactions
                ),
            )
            await create_topics(self.bootstrap, pipeline.topology.all())
            if self._start_worker:
                await pipeline.app.start()
                await _wait_assigned(pipeline)
        except BaseException:
            await self._stop_app()
            await self._stop_broker()
            raise
        self.started_in = time.monotonic() - started
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._stop_app()
        finally:
            await self._stop_broker()

    async def _stop_app(self) -> None:
        """Stop the worker (it finishes the batch in flight first); bounded in time."""
        if self.pipeline is None:
            return
        if self._start_worker:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pipeline.app.stop(), _STOP_TIMEOUT)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pipeline.aclose(), _STOP_TIMEOUT)

    async def _stop_broker(self) -> None:
        if self.broker is not None:
            await self.broker.astop()

    async def verify(
        self,
        requests: Sequence[InputRequest],
        *,
        timeout: float | None = None,
        on_verdict: Callable[[VerdictRecord], None] | None = None,
        on_sent: Callable[[AddressRequest], None] | None = None,
        bulk: bool = False,
    ) -> list[VerdictRecord]:
        """Submit ``requests`` and wait until each has its verdict (in input order).

        ``bulk`` submits them to the bulk topic (served after live requests).

        A request whose event went to the dead-letter topic has no verdict: it
        is left out of the result and its id is in :attr:`dead_lettered`.

        Raises:
            TimeoutError: ``timeout`` seconds passed before every verdict arrived.
        """
        settings = self.settings
        wanted = {r.request_id for r in requests}
        got: dict[str, VerdictRecord] = {}
        self.dead_lettered = set()
        verdicts = read_verdicts(self.bootstrap, settings.verdict_topic, from_beginning=True)
        letters = read_dead_letters(self.bootstrap, settings.dlq_topic)

        def finished() -> bool:
            if len(got) >= len(wanted):
                return True
            # Dead letters are rare: only then is the set difference worth its cost.
            return bool(self.dead_lettered) and (
                len(got) + len(self.dead_lettered - got.keys()) >= len(wanted)
            )

        async def collect() -> None:
            async for record in verdicts:
                if record.request_id in wanted and record.request_id not in got:
                    got[record.request_id] = record
                    if on_verdict is not None:
                        on_verdict(record)
                    if finished():
                        return

        async def watch_letters() -> None:
            async for request_id in letters:
                if request_id in wanted:
                    self.dead_lettered.add(request_id)

        collector = asyncio.ensure_future(collect())
        watcher = asyncio.ensure_future(watch_letters())
        try:
            await produce_requests(
                self.bootstrap,
                settings.bulk_topic if bulk else settings.input_topic,
                requests,
                allowed_tlds=settings.allow_tld,
                on_sent=on_sent,
            )
            async with asyncio.timeout(timeout):
                while not collector.done() and not finished():
                    await asyncio.wait({collector}, timeout=0.2)
        finally:
            for task in (collector, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await verdicts.aclose()
            await letters.aclose()
        return [got[r.request_id] for r in requests if r.request_id in got]


#: Seconds a worker may take to stop (finishing its batch) before it is abandoned.
_STOP_TIMEOUT = 60.0


async def _wait_assigned(pipeline: Pipeline, timeout: float = 60.0) -> None:
    """Wait until the worker owns partitions (the first rebalance is over)."""
    app = pipeline.app
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.rebalancing is False and app.consumer.assignment():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("The worker did not join its consumer group within 60 s.")
