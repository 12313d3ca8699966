"""The streaming pipeline on each broker (Tansu and Apache Kafka) against the sandbox."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from broker import BROKER_GUARANTEES, RunningBroker
from support import SandboxThread, requests_for

from streams.assembly import verifier_factory
from streams.pipeline.codecs import decode, encode
from streams.pipeline.inputs import InputRequest
from streams.pipeline.records import AddressRequest, DeadLetter, VerdictRecord
from streams.pipeline.runner import PipelineRun, produce_requests, read_verdicts
from streams.pipeline.tansu import FETCH_WAIT_MS
from streams.pipeline.topology import Topology
from streams.sandbox import load_world
from streams.settings import Settings

pytestmark = pytest.mark.integration

WORLD = load_world()
FIRST_TRY = {e.address: f"{e.status}/{e.reason}" for e in WORLD.expectations}
# The pipeline retries greylisting through its tiers (1 s, 2 s in these tests).
AFTER_RETRY = {e.address: e.after_retry or f"{e.status}/{e.reason}" for e in WORLD.expectations}


@pytest.fixture(scope="module")
def world_sb() -> Iterator[SandboxThread]:
    with SandboxThread(WORLD) as sb:
        yield sb


def pipeline_settings(sb: SandboxThread, broker: RunningBroker, **extra: Any) -> Settings:
    return sb.pipeline_settings(broker, **extra)


async def test_every_sandbox_behaviour_end_to_end(
    world_sb: SandboxThread, broker: RunningBroker
) -> None:
    """Every sandbox address gets its expected verdict through the whole pipeline
    (greylisted ones the answer of their retry)."""
    settings = pipeline_settings(world_sb, broker)
    make = verifier_factory(settings, extra_disposable=WORLD.disposable)
    async with PipelineRun(settings, make) as running:
        requests = requests_for(list(AFTER_RETRY))
        records = await running.verify(requests, timeout=60)
        assert running.pipeline is not None
        fetcher = running.pipeline.app.consumer._thread._ensure_consumer()._fetcher
    assert [r.request_id for r in records] == [r.request_id for r in requests]
    got = {r.email: f"{r.status.value}/{r.reason}" for r in records}
    assert got == AFTER_RETRY
    # Faust's data directory was a temporary one, gone with the worker.
    assert not Path(f"{settings.app_id}-data").exists()
    assert not Path(running.pipeline._datadir.name).exists()
    for record in records:
        assert record.latency_ms >= 0
        assert record.schema_version == 1
    # On Tansu a Fetch waits its whole max wait, data or not: Faust's 1,500 ms
    # would be added to every hop (streams.pipeline.tansu.FETCH_WAIT_MS). On
    # Kafka, which answers a Fetch as soon as data comes, Faust's own is kept.
    if broker.kind == "tansu":
        assert fetcher._fetch_max_wait_ms == FETCH_WAIT_MS
    else:
        assert fetcher._fetch_max_wait_ms != FETCH_WAIT_MS


async def test_duplicate_addresses_each_get_their_verdict(
    world_sb: SandboxThread, broker: RunningBroker
) -> None:
    """Two requests for the same address both get a verdict, keyed by their request ids."""
    settings = pipeline_settings(world_sb, broker)
    async with PipelineRun(settings, verifier_factory(settings)) as running:
        requests = requests_for(["alice@strict.test", "alice@strict.test", "bad address"])
        records = await running.verify(requests, timeout=60)
    assert [f"{r.status.value}/{r.reason}" for r in records] == [
        "deliverable/accepted",
        "deliverable/accepted",
        "undeliverable/invalid_syntax",
    ]


async def test_poison_message_goes_to_the_dead_letter_topic(
    world_sb: SandboxThread, broker: RunningBroker
) -> None:
    """Undecodable bytes land in the DLQ with their error; the stream goes on."""
    settings = pipeline_settings(world_sb, broker)
    async with PipelineRun(settings, verifier_factory(settings)) as running:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(settings.input_topic, key=b"k", value=b"not avro at all")
        finally:
            await producer.stop()
        records = await running.verify(requests_for(["alice@strict.test"]), timeout=60)
        assert records[0].status.value == "deliverable"
    consumer = AIOKafkaConsumer(
        settings.dlq_topic,
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=5000)
    finally:
        await consumer.stop()
    letters = [decode(m.value, DeadLetter) for messages in batch.values() for m in messages]
    assert len(letters) == 1
    letter = letters[0]
    assert letter.value == b"not avro at all" and letter.key == b"k"
    assert letter.topic == settings.input_topic and letter.offset >= 0
    assert letter.error  # a sentence saying what was wrong


async def test_a_failing_handler_dead_letters_its_events_and_goes_on(
    world_sb: SandboxThread, broker: RunningBroker
) -> None:
    """An unexpected error on one batch sends it to the DLQ; later requests still pass."""
    settings = pipeline_settings(world_sb, broker, batch_size=1)
    async with PipelineRun(settings, verifier_factory(settings)) as running:
        assert running.pipeline is not None
        verifier = running.pipeline.verifier
        real_route = verifier.route

        async def route(domain: str, **options: Any) -> Any:
            if domain == "catchall.test":
                raise RuntimeError("injected failure")
            return await real_route(domain, **options)

        verifier.route = route  # type: ignore[method-assign]
        failing = requests_for(["anyone@catchall.test"])
        assert await running.verify(failing, timeout=60) == []  # no verdict: a dead letter
        assert running.dead_lettered == {failing[0].request_id}
        records = await running.verify(requests_for(["alice@strict.test"]), timeout=60)
        assert records[0].status.value == "deliverable"
        assert running.pipeline.outputs.dead_letters == 1


async def test_domain_table_is_recovered_after_a_restart(
    world_sb: SandboxThread, broker: RunningBroker
) -> None:
    """A new worker of the same app rebuilds the domain and host tables from their changelogs."""
    settings = pipeline_settings(world_sb, broker)
    domains = ["strict.test", "catchall.test", "multiline.test", "nullmx.test", "implicit.test"]
    async with PipelineRun(settings, verifier_factory(settings)) as running:
        await running.verify(requests_for([f"alice@{d}" for d in domains]), timeout=60)
        assert running.pipeline is not None
        written = {key.decode() for key in running.pipeline.domains}
        facts = {key.decode() for key in running.pipeline.hosts}
    assert written >= set(domains)
    # Catch-all facts by domain, and each mail host's budget and health.
    assert facts >= {"catch-all:strict.test", "catch-all:catchall.test", "host:mx.strict.test"}
    # The same app again: nothing is resolved anew for a fresh route.
    async with PipelineRun(settings, verifier_factory(settings)) as again:
        assert again.pipeline is not None
        for _ in range(50):
            recovered = {key.decode() for key in again.pipeline.domains}
            recovered_facts = {key.decode() for key in again.pipeline.hosts}
            if recovered >= written and recovered_facts >= facts:
                break
            await asyncio.sleep(0.2)
        assert recovered >= written
        assert recovered_facts >= facts


async def first_verdicts(
    broker: RunningBroker, settings: Settings, count: int
) -> list[VerdictRecord]:
    """The first ``count`` verdicts on the test's verdict topic (within 60 s)."""
    records: list[VerdictRecord] = []
    stream = read_verdicts(broker.bootstrap, settings.verdict_topic)
    try:
        async with asyncio.timeout(60):
            async for record in stream:
                records.append(record)
                if len(records) == count:
                    break
    finally:
        await stream.aclose()
    return records


@pytest.mark.parametrize(("broker", "guarantee"), BROKER_GUARANTEES, indirect=["broker"])
async def test_a_request_seen_again_gets_the_very_same_verdict(
    world_sb: SandboxThread, broker: RunningBroker, guarantee: str
) -> None:
    """The same request processed twice (as after a crash): at least once it gets
    identical verdict bytes again; exactly once (on Kafka) no second verdict."""
    settings = pipeline_settings(world_sb, broker, processing_guarantee=guarantee)
    async with PipelineRun(settings, verifier_factory(settings)) as running:
        pipeline = running.pipeline
        assert pipeline is not None
        request = requests_for(["alice@strict.test"])
        await running.verify(request, timeout=60)
        await asyncio.sleep(0.05)  # a later verified_at, were it verified again
        await produce_requests(
            broker.bootstrap, settings.input_topic, request, allowed_tlds=("test",)
        )
        if pipeline.exactly_once:
            async with asyncio.timeout(30):
                while pipeline.outputs.answered_already == 0:
                    await asyncio.sleep(0.1)
            await asyncio.sleep(1)  # a second verdict, were one sent, committed by now
            records = [
                record
                async for record in read_verdicts(
                    broker.bootstrap, settings.verdict_topic, to_end=True
                )
            ]
        else:
            records = await first_verdicts(broker, settings, 2)
        outputs = pipeline.outputs
    assert pipeline.exactly_once == (guarantee == "exactly_once")
    if pipeline.exactly_once:
        assert [r.request_id for r in records] == [request[0].request_id]
        assert (outputs.resent, outputs.answered_already) == (0, 1)
    else:
        assert [r.request_id for r in records] == [request[0].request_id] * 2
        assert records[1] == records[0]  # every field, verified_at and latency_ms included
        assert (outputs.resent, outputs.answered_already) == (1, 0)


async def test_a_request_id_reused_for_another_address_gets_its_own_verdict(
    world_sb: SandboxThread, broker: RunningBroker
) -> None:
    """The id of an answered request, reused for another address: verified, not re-sent."""
    settings = pipeline_settings(world_sb, broker)
    async with PipelineRun(settings, verifier_factory(settings)) as running:
        assert running.pipeline is not None
        [first] = await running.verify(requests_for(["alice@strict.test"]), timeout=60)
        reused = [InputRequest("nobody@strict.test", first.request_id, "test", 3600)]
        await produce_requests(
            broker.bootstrap, settings.input_topic, reused, allowed_tlds=("test",)
        )
        records = await first_verdicts(broker, settings, 2)
        resent = running.pipeline.outputs.resent
    assert [(r.email, r.status.value) for r in records] == [
        ("alice@strict.test", "deliverable"),
        ("nobody@strict.test", "undeliverable"),
    ]
    assert resent == 0


async def count_records(bootstrap: str, topic: str, partitions: int) -> int:
    """Records in ``topic``, read from the beginning (not from ListOffsets: Tansu #1)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        count = 0
        while batch := await consumer.getmany(timeout_ms=500):
            count += sum(len(messages) for messages in batch.values())
        return count
    finally:
        await consumer.stop()


async def test_input_keyed_by_domain_skips_the_first_rekey(
    world_sb: SandboxThread, broker: RunningBroker
) -> None:
    """Requests keyed by their domain are resolved in intake; others go through
    by-domain, the requests of a batch for one domain in one DomainTasks event."""
    settings = pipeline_settings(world_sb, broker)
    by_domain = f"{settings.app_id}.by-domain"
    async with PipelineRun(settings, verifier_factory(settings)) as running:
        await running.verify(requests_for(["alice@strict.test", "bob@strict.test"]), timeout=60)
        assert await count_records(broker.bootstrap, by_domain, 2) == 0
        others = requests_for(["info@strict.test", "alice@strict.test"] * 10)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50)
        await producer.start()
        try:
            for other in others:
                request = AddressRequest(
                    request_id=other.request_id,
                    email=other.email,
                    submitted_at=datetime.now(tz=UTC),
                    source="test",
                )
                await producer.send(
                    settings.input_topic, key=b"some-user-id", value=encode(request)
                )
            await producer.flush()
        finally:
            await producer.stop()
        wanted = {other.request_id for other in others}
        stream = read_verdicts(broker.bootstrap, settings.verdict_topic)
        try:
            async with asyncio.timeout(60):
                async for record in stream:
                    wanted.discard(record.request_id)
                    if not wanted:
                        break
        finally:
            await stream.aclose()
        assert 1 <= await count_records(broker.bootstrap, by_domain, 2) < len(others)


@pytest.mark.parametrize(("broker", "guarantee"), BROKER_GUARANTEES, indirect=["broker"])
async def test_a_restarted_worker_sends_the_very_same_verdicts_again(
    world_sb: SandboxThread, broker: RunningBroker, guarantee: str
) -> None:
    """The ``sent`` table is rebuilt from its changelog; the requests submitted again get
    their verdicts again, byte for byte (at least once), or none (exactly once: answered
    already). At least once the changelog holds a message per batch of verdicts,
    exactly once one per verdict (in its transaction); the probe stage gets a message
    per mail host and batch, not per address."""
    settings = pipeline_settings(world_sb, broker, processing_guarantee=guarantee)
    requests = requests_for(["alice@strict.test", "nobody@strict.test"] * 20)
    async with PipelineRun(settings, verifier_factory(settings)) as running:
        first = await running.verify(requests, timeout=60)
    topology = Topology.from_settings(settings)
    n = settings.partitions
    changelog = await count_records(broker.bootstrap, topology.sent_changelog.name, n)
    by_host = await count_records(broker.bootstrap, topology.by_host.name, n)
    async with PipelineRun(settings, verifier_factory(settings)) as again:
        pipeline = again.pipeline
        assert pipeline is not None
        await produce_requests(
            broker.bootstrap, settings.input_topic, requests, allowed_tlds=("test",)
        )
        if pipeline.exactly_once:
            async with asyncio.timeout(60):
                while pipeline.outputs.answered_already < len(requests):
                    await asyncio.sleep(0.1)
            await asyncio.sleep(1)  # second verdicts, were any sent, committed by now
            records = [
                record
                async for record in read_verdicts(
                    broker.bootstrap, settings.verdict_topic, to_end=True
                )
            ]
        else:
            records = await first_verdicts(broker, settings, 2 * len(requests))
        outputs = pipeline.outputs
    assert len(first) == len(requests)
    by_id: dict[str, list[VerdictRecord]] = {}
    for record in records:
        by_id.setdefault(record.request_id, []).append(record)
    assert by_id.keys() == {r.request_id for r in requests}
    assert 1 <= by_host < len(requests) / 2
    if pipeline.exactly_once:
        assert (outputs.resent, outputs.answered_already) == (0, len(requests))
        assert all(len(copies) == 1 for copies in by_id.values())
        assert changelog >= len(requests)
    else:
        assert (outputs.resent, outputs.answered_already) == (len(requests), 0)
        assert all(len(pair) == 2 and pair[0] == pair[1] for pair in by_id.values())
        assert 1 <= changelog < len(requests) / 2
