"""Hostile DNS against the real resolver and Verifier: the hostile_dns sandbox world.

Every case ends in a bounded time with the verdict the world expects; the
resolver never walks hundreds of records, never loops, never hangs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import pytest
from support import SandboxThread

import streams.sandbox
from streams.adapters.resolver import (
    HostAddresses,
    MxAnswer,
    Resolver,
    ResolverConfig,
    parse_name_server,
)
from streams.assembly import build_verifier
from streams.core.mx import DnsProblem, MxRecord
from streams.core.verdict import Verdict
from streams.errors import ConfigError
from streams.sandbox import Expectation, World, load_world
from streams.sandbox.dns_server import DnsServer

pytestmark = pytest.mark.integration

WORLD = load_world(Path(streams.sandbox.__file__).with_name("hostile_dns.toml"))
TIMEOUT = 2.0  # the sandbox settings' per-step timeout, also the DNS lifetime
OK_HOST = "mx.ok.hostile.test"


def verdict_of(verdict: Verdict) -> str:
    return f"{verdict.status.value}/{verdict.reason.value}"


@pytest.fixture(scope="module")
def sb() -> Iterator[SandboxThread]:
    with SandboxThread(WORLD) as running:
        yield running


def resolver_for(sb: SandboxThread, **config: Any) -> Resolver:
    name_server = parse_name_server(sb.sandbox.dns_server)
    return Resolver(ResolverConfig(name_servers=(name_server,), lifetime=TIMEOUT, **config))


async def timed_verify(
    sb: SandboxThread, email: str, **overrides: Any
) -> tuple[Verdict, float, int]:
    """The verdict of ``email`` from a fresh verifier, its seconds, and connections opened."""
    verifier = build_verifier(sb.settings(**overrides))
    try:
        started = time.perf_counter()
        verdict = await verifier.verify(email)
        return verdict, time.perf_counter() - started, verifier.connections_opened
    finally:
        await verifier.aclose()


def queries_since(sb: SandboxThread, before: Mapping[tuple[str, str], int]) -> set[str]:
    """The names asked for A since ``before`` (a snapshot of the sandbox's query counts)."""
    after = sb.call(sb.sandbox.dns_queries)
    return {
        name
        for (name, rdtype), n in after.items()
        if rdtype == "A" and n > before.get((name, rdtype), 0)
    }


# ---------------------------------------------------------------- the world's verdicts


@pytest.fixture(scope="module")
def world_verdicts(sb: SandboxThread) -> dict[str, tuple[Verdict, float]]:
    """Every address of the world, each verified on its own (all at once), with its seconds."""

    async def verify_all() -> list[tuple[Verdict, float, int]]:
        emails = [e.address for e in WORLD.expectations]
        return await asyncio.gather(*(timed_verify(sb, email) for email in emails))

    return {v.email: (v, seconds) for v, seconds, _ in asyncio.run(verify_all())}


@pytest.mark.parametrize("expectation", WORLD.expectations, ids=lambda e: e.address)
def test_hostile_world_verdict(
    world_verdicts: dict[str, tuple[Verdict, float]], expectation: Expectation
) -> None:
    """Each hostile DNS case gets the verdict the world expects, within a bounded time."""
    verdict, seconds = world_verdicts[expectation.address]
    assert verdict_of(verdict) == f"{expectation.status}/{expectation.reason}", verdict.detail
    # The slowest case waits out one DNS lifetime; none may take twice the timeout.
    assert seconds < 2 * TIMEOUT


# ---------------------------------------------------------------- 1. hundreds of MX records


@pytest.mark.parametrize("max_mx_hosts", [1, 3, 5])
async def test_hundreds_of_mx_look_up_only_the_first_hosts(
    sb: SandboxThread, max_mx_hosts: int
) -> None:
    """Of 301 MX names, only max_mx_hosts are looked up; the verdict comes from the first."""
    before = sb.call(sb.sandbox.dns_queries)
    verdict, _, _ = await timed_verify(sb, "alice@hundreds-mx.test", max_mx_hosts=max_mx_hosts)
    assert verdict_of(verdict) == "deliverable/accepted"
    assert verdict.evidence.mail_host == OK_HOST
    asked = queries_since(sb, before)
    junk = {name for name in asked if name.startswith("junk-")}
    assert OK_HOST in asked and len(junk) == max_mx_hosts - 1


# ---------------------------------------------------------------- 2. an MX that is a CNAME


async def test_mx_naming_a_cname_resolves_through_it(sb: SandboxThread) -> None:
    """The addresses of an exchange that is a CNAME are its target's (RFC 2181 §10.3 aside)."""
    answer = await resolver_for(sb).addresses("mx.alias.hostile.test")
    assert isinstance(answer, HostAddresses)
    assert answer.addresses == (WORLD.host(OK_HOST).address,)


async def test_domain_cname_gives_the_canonical_mx(sb: SandboxThread) -> None:
    """The MX of a domain that is a CNAME is its canonical name's."""
    answer = await resolver_for(sb).mx("alias.test")
    assert isinstance(answer, MxAnswer) and answer.records == (MxRecord(10, OK_HOST),)


# ---------------------------------------------------------------- 3. CNAME loops


@pytest.mark.parametrize(
    ("lookup", "name"),
    [("mx", "cname-loop.test"), ("addresses", "mx.loop1.hostile.test")],
)
async def test_cname_loop_is_a_dns_failure(sb: SandboxThread, lookup: str, name: str) -> None:
    """A looping chain is SERVFAIL (unknown), at once: not NXDOMAIN, not a hang."""
    started = time.perf_counter()
    answer = await getattr(resolver_for(sb), lookup)(name)
    assert answer is DnsProblem.SERVFAIL
    assert time.perf_counter() - started < TIMEOUT / 2


# ---------------------------------------------------------------- 4. truncated UDP answers


async def test_big_mx_set_comes_only_over_tcp(sb: SandboxThread) -> None:
    """The 301-record MX set is truncated over UDP; the resolver gets it whole over TCP."""
    address, port = parse_name_server(sb.sandbox.dns_server)
    query = dns.message.make_query("hundreds-mx.test", "MX")  # no EDNS, as our resolver asks
    udp = await dns.asyncquery.udp(query, address, port=port, timeout=TIMEOUT)
    assert udp.flags & dns.flags.TC and not udp.answer
    answer = await resolver_for(sb).mx("hundreds-mx.test")
    assert isinstance(answer, MxAnswer) and len(answer.records) == 301
    verdict, _, _ = await timed_verify(sb, "nobody@hundreds-mx.test")
    assert verdict_of(verdict) == "undeliverable/mailbox_not_found"


async def test_name_server_counts_truncated_answers() -> None:
    """The sandbox counts each answer it had to send empty with TC=1."""
    server = DnsServer(WORLD)
    await server.start(0)
    try:
        query = dns.message.make_query("hundreds-mx.test", "MX")
        await dns.asyncquery.udp(query, server.address, port=server.port, timeout=TIMEOUT)
        assert server.authority.truncated == {("hundreds-mx.test", "MX"): 1}
    finally:
        await server.stop()


async def test_additional_section_goes_before_truncation() -> None:
    """510 exchange addresses do not fit: they are left out, the MX itself is not truncated."""
    server = DnsServer(WORLD)
    await server.start(0)
    try:
        query = dns.message.make_query("many-addresses.test", "MX")
        udp = await dns.asyncquery.udp(query, server.address, port=server.port, timeout=TIMEOUT)
        tcp = await dns.asyncquery.tcp(query, server.address, port=server.port, timeout=TIMEOUT)
    finally:
        await server.stop()
    assert not udp.flags & dns.flags.TC and len(udp.answer) == 1 and not udp.additional
    assert sum(len(rrset) for rrset in tcp.additional) == 510


# ---------------------------------------------------------------- 5. private addresses


@pytest.mark.parametrize("email", ["alice@private-mix.test", "alice@mx-cname.test"])
async def test_private_and_loopback_hosts_are_refused_by_default(
    sb: SandboxThread, email: str
) -> None:
    """Without allow_private_mx, loopback and private mail hosts are never probed."""
    sessions = sb.call(lambda: sb.sandbox.stats(OK_HOST).connections)
    verdict, _, connections = await timed_verify(sb, email, allow_private_mx=False)
    assert verdict_of(verdict) == "unknown/private_mx"
    assert connections == 0
    assert sb.call(lambda: sb.sandbox.stats(OK_HOST).connections) == sessions


async def test_private_stand_ins_are_published(sb: SandboxThread) -> None:
    """The private exchange's addresses reach the verifier (and are then refused)."""
    answer = await resolver_for(sb).addresses("mx.private.hostile.test")
    assert isinstance(answer, HostAddresses)
    assert set(answer.addresses) == {"192.0.2.25", "198.51.100.25"}


# ---------------------------------------------------------------- 6. a silent name server


async def test_silent_name_server_ends_at_the_lifetime(sb: SandboxThread) -> None:
    """A name server that never answers gives unknown/timeout after one lifetime."""
    verdict, seconds, _ = await timed_verify(sb, "alice@dns-silent.test", timeout=1.0)
    assert verdict_of(verdict) == "unknown/timeout"
    assert 0.9 < seconds < 2.0


# ---------------------------------------------------------------- hundreds of addresses


@pytest.mark.parametrize("cap", [1, 4, 16])
async def test_host_addresses_are_capped(sb: SandboxThread, cap: int) -> None:
    """A host with 510 addresses gives only the first ``cap`` of them."""
    answer = await resolver_for(sb, max_addresses_per_host=cap).addresses("mx.many.hostile.test")
    assert isinstance(answer, HostAddresses) and len(answer.addresses) == cap
    published = WORLD.domain("mx.many.hostile.test")
    assert published is not None and set(answer.addresses) <= set(published.a)


async def test_many_addresses_are_not_all_tried(sb: SandboxThread) -> None:
    """Of 510 dead addresses, only max_addresses_per_host get a connection attempt."""
    verdict, _, connections = await timed_verify(sb, "alice@many-addresses.test")
    assert verdict_of(verdict) == "unknown/connection_failed"
    assert connections == ResolverConfig().max_addresses_per_host


def test_address_cap_below_one_is_refused() -> None:
    """A cap of 0 would leave every host without an address: a ConfigError says so."""
    with pytest.raises(ConfigError, match="max_addresses_per_host is 0; it must be at least 1"):
        ResolverConfig(max_addresses_per_host=0)


# ---------------------------------------------------------------- many dead exchanges


async def test_unresolvable_first_exchanges_do_not_make_undeliverable() -> None:
    """Six exchanges without addresses before the real one must not mean 'no mail server'."""
    dead = [{"name": f"dead{i}.test", "txt": ["no address"]} for i in range(6)]
    mx = [{"preference": 5, "host": d["name"]} for d in dead]
    world = World.from_dict(
        {
            "hosts": [{"name": "mx.ok.test", "address": "127.0.53.158"}],
            "domains": [
                *dead,
                {
                    "name": "deadfirst.test",
                    "mx": [*mx, {"preference": 10, "host": "mx.ok.test"}],
                    "users": ["alice"],
                },
            ],
        }
    )
    with SandboxThread(world) as running:
        verdict, _, _ = await timed_verify(running, "alice@deadfirst.test")
    assert verdict.status.value != "undeliverable", verdict_of(verdict)
