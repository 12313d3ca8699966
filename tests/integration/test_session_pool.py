"""Idle SMTP sessions carried from one probe batch to the next, against the sandbox.

The sandbox's SMTP servers run for real on loopback (free port), in the test's
own event loop; the prober talks to them as it talks to any mail host, and the
servers' counters say what they saw.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from streams.adapters.smtp_probe import (
    IDLE_PER_TARGET,
    ProbeConfig,
    ProbeOutcome,
    SmtpProber,
    Target,
)
from streams.sandbox import HostStats, Sandbox, World

pytestmark = pytest.mark.integration

PRIMARY = Target("mx1.pool.test", "127.0.53.120")
SECONDARY = Target("mx2.pool.test", "127.0.53.121")
USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace")
IDLE = 1.0  # the prober's idle timeout in most tests: short, so tests stay fast


def pool_world(**smtp: Any) -> World:
    """pool.test, served by two strict hosts; ``smtp`` sets the ``[smtp]`` table."""
    mx = [
        {"preference": 10, "host": PRIMARY.host},
        {"preference": 20, "host": SECONDARY.host},
    ]
    return World.from_dict(
        {
            "smtp": smtp,
            "hosts": [
                {"name": t.host, "address": t.address, "behaviour": "strict"}
                for t in (PRIMARY, SECONDARY)
            ],
            "domains": [{"name": "pool.test", "mx": mx, "users": list(USERS)}],
        }
    )


@dataclasses.dataclass
class Pool:
    """A running sandbox and a prober pointed at it."""

    sandbox: Sandbox
    config: ProbeConfig

    def prober(self, **options: Any) -> SmtpProber:
        return SmtpProber(dataclasses.replace(self.config, **options))

    def stats(self, target: Target = PRIMARY) -> HostStats:
        return self.sandbox.stats(target.host)


@contextlib.asynccontextmanager
async def running(world: World) -> AsyncIterator[Pool]:
    async with Sandbox(world, dns_port=0, smtp_port=0) as sandbox:
        config = ProbeConfig(
            port=sandbox.smtp_port,
            helo="probe.mxprobe.test",
            connect_timeout=2.0,
            banner_timeout=2.0,
            command_timeout=2.0,
            rcpt_per_transaction=50,
            idle_timeout=IDLE,
        )
        yield Pool(sandbox, config)


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    async with running(pool_world()) as started:
        yield started


async def eventually(condition: Callable[[], bool], *, within: float = 5.0) -> float:
    """Wait until ``condition()`` holds; returns the monotonic time it was seen to hold."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.01)
    return time.monotonic()


def addresses(*locals_: str) -> list[str]:
    return [f"{local}@pool.test" for local in locals_]


async def probe(
    prober: SmtpProber,
    targets: list[Target],
    recipients: list[str],
    *,
    rcpt_per_session: int = 50,
) -> ProbeOutcome:
    """``prober.probe`` with at most 50 sessions of ``rcpt_per_session`` RCPTs each."""
    return await prober.probe(
        targets, recipients, max_sessions=50, rcpt_per_session=rcpt_per_session
    )


def codes(outcome: ProbeOutcome) -> dict[str, int | None]:
    """Each recipient's RCPT reply code (None when it got no reply)."""
    return {r: (o.reply.code if o.reply else None) for r, o in outcome.results.items()}


def rcpts_per_connection(stats: HostStats) -> list[int]:
    """RCPTs received on each connection, for connections that followed one another."""
    starts = stats.connection_times
    counts = [0] * len(starts)
    for moment in stats.rcpt_times:
        counts[bisect.bisect_right(starts, moment) - 1] += 1
    return counts


async def test_second_batch_reuses_the_idle_session(pool: Pool) -> None:
    """Two batches within the idle timeout share one session, QUIT once the timeout passes."""
    prober = pool.prober()
    first = await probe(prober, [PRIMARY], addresses("alice", "nobody"))
    second = await probe(prober, [PRIMARY], addresses("bob", "nobody2"))
    parked_at = time.monotonic()
    stats = pool.stats()
    assert (stats.connections, stats.sessions, stats.quits) == (1, 1, 0)
    assert (first.reused, first.sessions, first.connections) == (0, 1, 1)
    assert (second.reused, second.sessions, second.connections) == (1, 0, 0)
    assert codes(first) == {"alice@pool.test": 250, "nobody@pool.test": 550}
    assert codes(second) == {"bob@pool.test": 250, "nobody2@pool.test": 550}
    assert {o.connections for o in second.results.values()} == {1}  # the verdict's attempts
    quit_seen = await eventually(lambda: stats.quits == 1)
    assert quit_seen - parked_at >= IDLE - 0.05
    assert stats.connections == 1 and stats.open_connections == 0


async def test_reuse_starts_with_rset_and_a_new_transaction(pool: Pool) -> None:
    """A reused session is checked with RSET, then asked with MAIL FROM as usual."""
    prober = pool.prober()
    await probe(prober, [PRIMARY], addresses("alice"))
    await probe(prober, [PRIMARY], addresses("bob"))
    stats = pool.stats()
    assert stats.rset == 1
    assert stats.mail_from == ["", ""]
    await prober.aclose()


async def test_batch_after_the_idle_timeout_opens_a_new_session(pool: Pool) -> None:
    """Once the idle session is QUIT, the next batch connects anew."""
    prober = pool.prober()
    await probe(prober, [PRIMARY], addresses("alice"))
    stats = pool.stats()
    await eventually(lambda: stats.quits == 1)
    later = await probe(prober, [PRIMARY], addresses("bob"))
    assert (later.reused, later.sessions, later.connections) == (0, 1, 1)
    assert codes(later) == {"bob@pool.test": 250}
    assert (stats.connections, stats.sessions) == (2, 2)
    await prober.aclose()
    assert stats.quits == 2


async def test_a_session_never_sends_more_than_rcpt_per_session(pool: Pool) -> None:
    """With 3 RCPTs per session, two batches of 2 use two sessions of 3 and 1 RCPTs."""
    prober = pool.prober()
    first = await probe(prober, [PRIMARY], addresses("alice", "bob"), rcpt_per_session=3)
    second = await probe(prober, [PRIMARY], addresses("carol", "nobody"), rcpt_per_session=3)
    stats = pool.stats()
    assert codes(first) == {"alice@pool.test": 250, "bob@pool.test": 250}
    assert codes(second) == {"carol@pool.test": 250, "nobody@pool.test": 550}
    assert (second.reused, second.sessions, second.connections) == (1, 1, 1)
    assert (stats.connections, stats.sessions, stats.rcpts) == (2, 2, 4)
    assert rcpts_per_connection(stats) == [3, 1]
    assert stats.quits == 1  # the full session, at once; the other one is idle
    await prober.aclose()
    assert stats.quits == 2


async def test_one_batch_beyond_rcpt_per_session_spreads_over_sessions(pool: Pool) -> None:
    """A batch larger than the per-session maximum continues in new sessions."""
    prober = pool.prober()
    outcome = await probe(prober, [PRIMARY], addresses(*USERS), rcpt_per_session=3)
    stats = pool.stats()
    assert codes(outcome) == dict.fromkeys(addresses(*USERS), 250)
    assert (outcome.sessions, outcome.connections) == (3, 3)
    assert rcpts_per_connection(stats) == [3, 3, 1]
    assert stats.quits == 2  # the two full sessions; the last one is idle
    await prober.aclose()


async def test_idle_session_closed_by_the_host_is_replaced_quietly() -> None:
    """A host that hangs up on idle sessions: the next batch connects anew, no failover."""
    async with running(pool_world(idle_timeout=0.3)) as pool:
        prober = pool.prober(idle_timeout=30.0)
        await probe(prober, [PRIMARY, SECONDARY], addresses("alice"))
        stats = pool.stats()
        await eventually(lambda: stats.replies_421 == 1 and stats.open_connections == 0)
        later = await probe(prober, [PRIMARY, SECONDARY], addresses("bob", "nobody"))
        assert codes(later) == {"bob@pool.test": 250, "nobody@pool.test": 550}
        assert {o.target for o in later.results.values()} == {PRIMARY}
        assert {o.failure for o in later.results.values()} == {None}
        assert (later.reused, later.sessions, later.connections) == (0, 1, 1)
        assert pool.stats(SECONDARY).connections == 0
        assert (stats.connections, stats.sessions) == (2, 2)
        await prober.aclose()


async def test_idle_session_of_a_restarted_host_is_replaced_quietly() -> None:
    """A host restarted while a session idles (connection reset, no 421): a new one answers."""
    world = pool_world()
    async with running(world) as pool:
        prober = pool.prober(idle_timeout=30.0)
        await probe(prober, [PRIMARY], addresses("alice"))
    port = pool.config.port
    async with Sandbox(world, dns_port=0, smtp_port=port) as restarted:
        later = await probe(prober, [PRIMARY], addresses("bob"))
        assert codes(later) == {"bob@pool.test": 250}
        assert (later.reused, later.sessions, later.connections) == (0, 1, 1)
        assert restarted.stats(PRIMARY.host).connections == 1
        await prober.aclose()


async def test_aclose_quits_idle_sessions_and_parks_no_more(pool: Pool) -> None:
    """aclose() QUITs every idle session; later batches QUIT theirs at once."""
    prober = pool.prober(idle_timeout=30.0)
    await probe(prober, [PRIMARY], addresses("alice"))
    await probe(prober, [SECONDARY], addresses("bob"))
    assert pool.stats().quits == pool.stats(SECONDARY).quits == 0
    await prober.aclose()
    assert pool.stats().quits == pool.stats(SECONDARY).quits == 1
    later = await probe(prober, [PRIMARY], addresses("carol"))
    assert (later.reused, later.connections) == (0, 1)
    assert codes(later) == {"carol@pool.test": 250}
    assert pool.stats().quits == 2


async def test_idle_timeout_zero_quits_every_session_at_once(pool: Pool) -> None:
    """idle_timeout=0 keeps nothing: one session and one QUIT per batch."""
    prober = pool.prober(idle_timeout=0.0)
    for local in ("alice", "bob"):
        outcome = await probe(prober, [PRIMARY], addresses(local))
        assert (outcome.reused, outcome.sessions, outcome.connections) == (0, 1, 1)
    stats = pool.stats()
    assert (stats.connections, stats.sessions, stats.quits, stats.rset) == (2, 2, 2, 0)


async def test_the_first_target_with_an_idle_session_is_preferred(pool: Pool) -> None:
    """Idle sessions to several targets: the first of the call's targets that has one wins."""
    prober = pool.prober(idle_timeout=30.0)
    await probe(prober, [PRIMARY], addresses("alice"))
    await probe(prober, [SECONDARY], addresses("alice"))
    for order in ([SECONDARY, PRIMARY], [PRIMARY, SECONDARY]):
        outcome = await probe(prober, order, addresses("bob"))
        assert outcome.reused == 1
        assert outcome.results["bob@pool.test"].target == order[0]
    assert pool.stats().connections == pool.stats(SECONDARY).connections == 1
    await prober.aclose()


async def test_idle_sessions_per_target_are_capped(pool: Pool) -> None:
    """Batches ending together park at most IDLE_PER_TARGET sessions; the rest QUIT."""
    prober = pool.prober(idle_timeout=30.0)
    batches = [addresses(local) for local in USERS[: IDLE_PER_TARGET + 2]]
    await asyncio.gather(*(probe(prober, [PRIMARY], batch) for batch in batches))
    stats = pool.stats()
    assert stats.connections == IDLE_PER_TARGET + 2
    assert stats.quits == 2
    await prober.aclose()
    assert stats.quits == IDLE_PER_TARGET + 2


async def test_idle_session_does_not_outlive_its_event_loop(pool: Pool) -> None:
    """A loop that ends with a session still idle closes the connection (no QUIT, no leak)."""
    prober = pool.prober(idle_timeout=30.0)

    async def probe_once() -> ProbeOutcome:
        return await probe(prober, [PRIMARY], addresses("alice"))

    outcome = await asyncio.to_thread(asyncio.run, probe_once())
    assert codes(outcome) == {"alice@pool.test": 250}
    stats = pool.stats()
    await eventually(lambda: stats.open_connections == 0)
    assert (stats.connections, stats.quits) == (1, 0)
    later = await probe(prober, [PRIMARY], addresses("bob"))  # nothing stale left behind
    assert (later.reused, later.connections) == (0, 1)
    await prober.aclose()
