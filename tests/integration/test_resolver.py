"""The DNS adapter against the sandbox name server: outcomes kept apart, TTLs clamped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import SandboxThread

from streams.adapters.resolver import (
    HostAddresses,
    MxAnswer,
    Resolver,
    ResolverConfig,
    parse_name_server,
)
from streams.core.mx import DnsProblem, MxRecord
from streams.errors import ConfigError
from streams.sandbox import World

pytestmark = pytest.mark.integration

WORLD = World.from_dict(
    {
        "dns": {"ttl": 300},
        "hosts": [
            {"name": "mx.a.test", "address": "127.0.55.10"},
            {"name": "mx.b.test", "address": "127.0.55.11"},
        ],
        "domains": [
            {
                "name": "two.test",
                "mx": [
                    {"preference": 20, "host": "mx.b.test"},
                    {"preference": 10, "host": "mx.a.test"},
                ],
            },
            {"name": "short.test", "mx": [{"preference": 10, "host": "mx.a.test"}], "ttl": 5},
            {
                "name": "long.test",
                "mx": [{"preference": 10, "host": "mx.a.test"}],
                "ttl": 9_999_999,
            },
            {"name": "nullmx.test", "null_mx": True},
            {"name": "txtonly.test", "txt": ["v=spf1 -all"]},
            {"name": "aonly.test", "a": ["127.0.55.10"]},
            {"name": "broken.test", "servfail": True},
            {"name": "silent.test", "drop": True},
        ],
    }
)


@pytest.fixture(scope="module")
def sb() -> Iterator[SandboxThread]:
    with SandboxThread(WORLD) as running:
        yield running


def resolver_for(sb: SandboxThread, *, lifetime: float = 2.0) -> Resolver:
    host, port = parse_name_server(sb.sandbox.dns_server)
    return Resolver(
        ResolverConfig(
            name_servers=((host, port),), lifetime=lifetime, ttl_floor=60, ttl_ceiling=86_400
        )
    )


async def test_mx_records(sb: SandboxThread) -> None:
    """MX records come back as values with their preferences."""
    answer = await resolver_for(sb).mx("two.test")
    assert isinstance(answer, MxAnswer)
    assert sorted(answer.records) == [MxRecord(10, "mx.a.test"), MxRecord(20, "mx.b.test")]


@pytest.mark.parametrize(
    ("domain", "ttl"), [("short.test", 60), ("two.test", 300), ("long.test", 86_400)]
)
async def test_ttl_is_clamped(sb: SandboxThread, domain: str, ttl: int) -> None:
    """TTLs below the floor are raised, above the ceiling lowered, others kept."""
    answer = await resolver_for(sb).mx(domain)
    assert isinstance(answer, MxAnswer) and answer.ttl == ttl


async def test_null_mx_record(sb: SandboxThread) -> None:
    """A null MX comes back as one record with the root as exchange."""
    answer = await resolver_for(sb).mx("nullmx.test")
    assert isinstance(answer, MxAnswer) and answer.records == (MxRecord(0, ""),)


async def test_no_mx_is_an_empty_answer(sb: SandboxThread) -> None:
    """A name with no MX (NODATA) is an empty answer, not an error."""
    answer = await resolver_for(sb).mx("txtonly.test")
    assert isinstance(answer, MxAnswer) and answer.records == ()


@pytest.mark.parametrize(
    ("domain", "problem"),
    [
        ("nosuch.test", DnsProblem.NXDOMAIN),
        ("broken.test", DnsProblem.SERVFAIL),
        ("silent.test", DnsProblem.TIMEOUT),
        ("outside.example", DnsProblem.SERVFAIL),
    ],
)
async def test_problems_are_kept_apart(sb: SandboxThread, domain: str, problem: DnsProblem) -> None:
    """NXDOMAIN, SERVFAIL (and REFUSED), and timeout are distinct outcomes."""
    assert await resolver_for(sb, lifetime=1.0).mx(domain) is problem


async def test_host_addresses(sb: SandboxThread) -> None:
    """A and AAAA are looked up together."""
    answer = await resolver_for(sb).addresses("aonly.test")
    assert isinstance(answer, HostAddresses) and answer.addresses == ("127.0.55.10",)


async def test_host_without_addresses(sb: SandboxThread) -> None:
    """A name with neither A nor AAAA has no addresses."""
    answer = await resolver_for(sb).addresses("txtonly.test")
    assert isinstance(answer, HostAddresses) and answer.addresses == ()


async def test_host_nxdomain(sb: SandboxThread) -> None:
    """A missing host name is NXDOMAIN."""
    assert await resolver_for(sb).addresses("nosuch.test") is DnsProblem.NXDOMAIN


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.53.53:10053", ("127.0.53.53", 10053)),
        ("[::1]:5353", ("::1", 5353)),
        ("::1", ("::1", 53)),
    ],
)
def test_parse_name_server(text: str, parsed: tuple[str, int]) -> None:
    """HOST[:PORT] parses, with IPv6 in brackets."""
    assert parse_name_server(text) == parsed


@pytest.mark.parametrize("text", ["dns.example", "127.0.0.1:0", "127.0.0.1:99999", "1.2.3.4:x"])
def test_bad_name_server(text: str) -> None:
    """A host name or bad port is a ConfigError that says how to fix it."""
    with pytest.raises(ConfigError, match=r"--dns-server|port"):
        parse_name_server(text)
