"""Running the pipeline: a broker (embedded unless configured), topics, the worker.

:class:`PipelineRun` is what ``mxprobe worker``, ``mxprobe run`` and the
integration tests share: it starts the embedded broker when no broker URL is
set, creates every topic up front with its final partition count, and runs
the Faust app in the current event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.core.address import SyntaxProblem, parse_address
from streams.embedded import EmbeddedBroker, create_topics
from streams.pipeline.app import Pipeline, free_port
from streams.pipeline.codecs import decode, encode
from streams.pipeline.inputs import InputRequest
from streams.pipeline.records import AddressRequest, VerdictRecord
from streams.settings import Settings
from streams.verifier import Verifier

__all__ = ["PipelineRun", "partition_key", "produce_requests", "read_verdicts"]


def partition_key(email: str, allowed_tlds: Iterable[str] = ()) -> bytes:
    """The input key of an address: its ASCII domain (so intake keeps domains together).

    Unparsable addresses are keyed by whatever follows the last ``@``.
    """
    parsed = parse_address(email, allowed_tlds=allowed_tlds)
    if isinstance(parsed, SyntaxProblem):
        return email.rpartition("@")[2].strip().lower().encode("utf-8", "surrogateescape")
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


async def read_verdicts(
    bootstrap: str, topic: str, *, from_beginning: bool = True, idle_ms: int = 500
) -> AsyncGenerator[VerdictRecord, None]:
    """Every verdict on ``topic`` (from the beginning or from now), until cancelled."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    await consumer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=idle_ms, max_records=10_000)
            for messages in batches.values():
                for message in messages:
                    yield decode(message.value, VerdictRecord)
    finally:
        await consumer.stop()


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
        self.started_in = 0.0  # seconds until the worker had joined its group

    async def __aenter__(self) -> Self:
        started = time.monotonic()
        url = self.settings.broker
        if url is None:
            self.broker = EmbeddedBroker()
            await self.broker.astart()
            url = self.broker.url
        self.bootstrap = url.removeprefix("kafka://")
        try:
            pipeline = Pipeline(
                self.settings,
                self._make_verifier,
                broker=url,
                embedded=self.broker is not None or self.settings.broker_kind == "tansu",
                web_port=self.settings.web_port or free_port(),
            )
            await create_topics(self.bootstrap, pipeline.topology.all())
            self.pipeline = pipeline
            if self._start_worker:
                await pipeline.app.start()
                await _wait_assigned(pipeline)
        except BaseException:
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
            if self.pipeline is not None and self._start_worker:
                with contextlib.suppress(Exception):
                    await self.pipeline.app.stop()
        finally:
            await self._stop_broker()

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
    ) -> list[VerdictRecord]:
        """Submit ``requests`` and wait until each has its verdict (in input order).

        Raises:
            TimeoutError: ``timeout`` seconds passed before every verdict arrived.
        """
        settings = self.settings
        wanted = {r.request_id for r in requests}
        got: dict[str, VerdictRecord] = {}
        verdicts = read_verdicts(self.bootstrap, settings.verdict_topic, from_beginning=True)

        async def collect() -> None:
            async for record in verdicts:
                if record.request_id in wanted and record.request_id not in got:
                    got[record.request_id] = record
                    if on_verdict is not None:
                        on_verdict(record)
                    if len(got) == len(wanted):
                        return

        collector = asyncio.ensure_future(collect())
        try:
            await produce_requests(
                self.bootstrap,
                settings.input_topic,
                requests,
                allowed_tlds=settings.allow_tld,
                on_sent=on_sent,
            )
            await asyncio.wait_for(asyncio.shield(collector), timeout)
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
            await verdicts.aclose()
        return [got[r.request_id] for r in requests]


async def _wait_assigned(pipeline: Pipeline, timeout: float = 60.0) -> None:
    """Wait until the worker owns partitions (the first rebalance is over)."""
    app = pipeline.app
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.rebalancing is False and app.consumer.assignment():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("The worker did not join its consumer group within 60 s.")
