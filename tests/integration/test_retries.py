"""Retry tiers, host budgets, AIMD, the circuit breaker and live-first, on the real broker.

Every test runs the whole pipeline (PipelineRun: Faust worker on the bundled
Tansu) against the sandbox world; what the mail hosts saw is counted on the
server side (HostStats).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker import RunningBroker
from support import SandboxThread, requests_for

from streams.assembly import verifier_factory
from streams.core.host_state import HostState
from streams.pipeline.records import VerdictRecord
from streams.pipeline.runner import PipelineRun, read_host_states
from streams.pipeline.topology import Topology
from streams.sandbox import load_world
from streams.settings import Settings

pytestmark = pytest.mark.integration

WORLD = load_world()


@pytest.fixture
def sb() -> Iterator[SandboxThread]:
    """A sandbox of its own: the rate-limited hosts count per client over a minute."""
    with SandboxThread(WORLD) as sandbox:
        yield sandbox


def settings_for(sb: SandboxThread, broker: RunningBroker, **extra: Any) -> Settings:
    return sb.pipeline_settings(broker, **extra)


def outcome(record: VerdictRecord) -> str:
    return f"{record.status.value}/{record.reason}"


async def host_states(broker: RunningBroker, settings: Settings) -> dict[str, HostState]:
    topic = Topology.from_settings(settings).hosts_changelog.name
    return await read_host_states(broker.bootstrap, topic, tansu=broker.kind == "tansu")


async def test_greylisting_is_resolved_by_the_retry_tiers(
    sb: SandboxThread, broker: RunningBroker
) -> None:
    """450 4.7.1 first; the retries through the tiers get the mailbox's real answer."""
    settings = settings_for(sb, broker, retry_delays=(1.0, 2.0, 4.0))
    async with PipelineRun(settings, verifier_factory(settings)) as running:
        records = await running.verify(
            requests_for(["alice@greylist.test", "nobody@greylist.test"]), timeout=60
        )
        assert running.pipeline is not None
        scheduled = running.pipeline.outputs.retries_scheduled
    assert [outcome(r) for r in records] == [
        "deliverable/accepted",
        "undeliverable/mailbox_not_found",
    ]
    for record in records:
        # Evidence counts the sessions of every attempt: the first and the retries.
        assert record.evidence.attempts >= 2
        assert record.evidence.reply_code in (250, 550)
    # The 5 s greylisting delay needs at least two retries per address (1 s, then 2 s tier).
    assert scheduled >= 4
    stats = sb.call(lambda: sb.sandbox.stats("mx.greylist.test"))
    assert stats.data_commands == 0


async def test_exhausted_retries_end_unknown_greylisted_with_the_evidence(
    sb: SandboxThread, broker: RunningBroker
) -> None:
    """Two retries a second apart cannot outlast a 5 s greylisting: unknown/greylisted."""
    settings = settings_for(sb, broker, retry_delays=(1.0,), retry_attempts="greylisted=2")
    started = time.monotonic()
    async with PipelineRun(settings, verifier_factory(settings)) as running:
        [record] = await running.verify(requests_for(["alice@greylist.test"]), timeout=60)
        assert running.pipeline is not None
        assert running.pipeline.outputs.retries_scheduled == 2
    assert outcome(record) == "unknown/greylisted"
    assert (record.evidence.reply_code, record.evidence.enhanced_status) == (450, "4.7.1")
    assert record.evidence.attempts == 3  # the first try and two retries
    assert record.confidence == 0.0
    assert time.monotonic() - started < 60


async def test_a_retry_delay_longer_than_the_session_timeout_causes_no_rebalance(
    sb: SandboxThread, broker: RunningBroker
) -> None:
    """An event held 15 s (session timeout 10 s) keeps the group stable, and does not
    hold back another tier: a throttled address's 1 s retry ends meanwhile."""
    settings = settings_for(
        sb, broker, retry_delays=(1.0, 15.0), retry_attempts="greylisted=2,throttled=1"
    )
    async with PipelineRun(settings, verifier_factory(settings)) as running:
        pipeline = running.pipeline
        assert pipeline is not None
        rebalances = pipeline.app.rebalancing_count
        assignment = set(pipeline.app.consumer.assignment())
        started = time.monotonic()
        greylisted = asyncio.ensure_future(
            running.verify(requests_for(["alice@greylist.test"]), timeout=60)
        )
        await asyncio.sleep(3)  # alice is held in the 15 s tier by now
        [throttled] = await running.verify(requests_for(["alice@ratelimited.test"]), timeout=30)
        throttled_after = time.monotonic() - started
        [record] = await greylisted
        waited = time.monotonic() - started
        assert pipeline.app.rebalancing_count == rebalances
        assert set(pipeline.app.consumer.assignment()) == assignment
        assert pipeline.outputs.retries_released == 0
    assert outcome(record) == "deliverable/accepted"  # the 15 s tier outlasted greylisting
    assert waited >= 15
    assert outcome(throttled) == "unknown/throttled"
    assert throttled_after < 12  # not behind the event waiting in the 15 s tier


async def test_defaults_stay_under_a_providers_rate_limit(
    sb: SandboxThread, broker: RunningBroker
) -> None:
    """Under mxprobe's default budget (1 RCPT/s, burst 20; 6 connections a minute, burst 3)
    a host that allows 100 RCPTs and 12 connections a minute never answers 421,
    and never sees more than the budget in any window (counted by the server)."""
    defaults = Settings()
    settings = settings_for(
        sb,
        broker,
        host_rcpt_per_second=defaults.host_rcpt_per_second,
        host_rcpt_burst=defaults.host_rcpt_burst,
        host_connections_per_minute=defaults.host_connections_per_minute,
        host_max_sessions=defaults.host_max_sessions,
        retry_delays=(1.0,),
        retry_attempts="budget=200",
    )
    users = ["alice", "bob", "carol", "dave", "erin"]
    emails = [f"{users[i % 5] if i < 5 else f'user{i}'}@limited.test" for i in range(30)]
    async with PipelineRun(settings, verifier_factory(settings)) as running:
        records = await running.verify(requests_for(emails), timeout=90)
        states = await host_states(broker, settings)
    assert [outcome(r) for r in records] == [
        "deliverable/accepted" if i < 5 else "undeliverable/mailbox_not_found" for i in range(30)
    ]
    stats = sb.call(lambda: sb.sandbox.stats("mx.limited.test"))
    assert stats.replies_421 == 0
    assert stats.rcpts == 31  # 30 addresses and one catch-all probe
    rate, burst = defaults.host_rcpt_per_second, defaults.host_rcpt_burst
    for window in (1.0, 5.0, 10.0, 30.0):
        assert stats.peak("rcpt_times", window) <= burst + rate * window
    assert stats.peak("connection_times", 60.0) <= 3 + defaults.host_connections_per_minute
    state = states["mx.limited.test"]
    assert state.factor == 1.0 and state.throttles == 0
    assert state.rcpts == 31


async def test_a_421_cuts_the_budget_and_repeated_failures_pause_the_host(
    sb: SandboxThread, broker: RunningBroker, tmp_path: Path
) -> None:
    """AIMD and the circuit breaker, seen in the mail-host table: a host that answers
    every connection with 421 gets its budget cut, then is paused for a cool-down."""
    rules = tmp_path / "politeness.toml"
    rules.write_text(
        '[[provider]]\nname = "sandbox"\nhosts = ["mx.ratelimited.test"]\n'
        "failure_threshold = 2\ncool_down = 600\n",
        encoding="utf-8",
    )
    settings = settings_for(
        sb,
        broker,
        politeness_file=rules,
        retry_delays=(1.0,),
        retry_attempts="throttled=1",
        retry_max_age=30.0,  # a pause of 600 s is past it: no deferral, a verdict at once
    )
    async with PipelineRun(settings, verifier_factory(settings)) as running:
        first = await running.verify(requests_for(["alice@ratelimited.test"]), timeout=30)
        states = await host_states(broker, settings)
        paused = states["mx.ratelimited.test"]
        connections = sb.call(lambda: sb.sandbox.stats("mx.ratelimited.test")).connections
        # Paused: a new request is not probed at all, it is held back by the breaker.
        later = await running.verify(requests_for(["bob@ratelimited.test"]), timeout=30)
        after = sb.call(lambda: sb.sandbox.stats("mx.ratelimited.test")).connections
    assert outcome(first[0]) == "unknown/throttled"
    assert paused.factor < 1.0 and paused.throttles >= 2
    assert paused.paused(time.time())
    assert paused.paused_until > time.time() + 500
    assert after == connections  # the breaker held the new request back
    assert outcome(later[0]) == "unknown/throttled"
    assert later[0].evidence.reply_code is None  # never asked: mxprobe's own budget


async def test_live_requests_overtake_a_backlog_of_bulk_requests(
    sb: SandboxThread, broker: RunningBroker
) -> None:
    """200 bulk requests at 20 RCPT/s take 10 s; 10 live ones sent a second later are
    answered within a few seconds, long before the bulk backlog is done."""
    settings = settings_for(
        sb,
        broker,
        host_rcpt_per_second=20.0,
        host_rcpt_burst=20,
        retry_delays=(0.5, 1.0),
        retry_attempts="budget=200",
    )
    bulk = requests_for([f"bulk{i}@strict.test" for i in range(200)])
    live = requests_for([f"live{i}@strict.test" for i in range(10)])
    async with PipelineRun(settings, verifier_factory(settings)) as running:
        started = time.monotonic()
        backlog = asyncio.ensure_future(running.verify(bulk, timeout=120, bulk=True))
        await asyncio.sleep(1.0)
        live_records = await running.verify(live, timeout=60)
        live_done = time.monotonic() - started
        bulk_records = await backlog
        bulk_done = time.monotonic() - started
    assert len(live_records) == 10 and len(bulk_records) == 200
    assert all(outcome(r) == "undeliverable/mailbox_not_found" for r in live_records)
    assert bulk_done >= 8  # the budget paced the backlog
    assert live_done < bulk_done / 2
    last_live = max(r.verified_at for r in live_records)
    overtaken = sum(1 for r in bulk_records if r.verified_at > last_live)
    assert overtaken >= 100  # the live requests went ahead of most of the backlog
