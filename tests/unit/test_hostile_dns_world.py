"""Hostile-DNS world entries: CNAMEs, junk MX, address networks, private stand-ins.

Pure: the world reader, CNAME following in the world, and the name server's
answers built in-process (no sockets).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.sandbox
from streams.sandbox import World, WorldError, load_world
from streams.sandbox.dns_server import Authority

HOSTILE = load_world(Path(streams.sandbox.__file__).with_name("hostile_dns.toml"))
HOST = {"name": "mx.a.test", "address": "127.0.53.110"}
MX = [{"preference": 10, "host": "mx.a.test"}]


def domain(name: str) -> Any:
    found = HOSTILE.domain(name)
    assert found is not None, name
    return found


# ---------------------------------------------------------------- reading


def test_hostile_world_has_an_expectation_per_case() -> None:
    """Every hostile DNS case of the issue is demonstrated by at least one address."""
    shown = {e.behaviour for e in HOSTILE.expectations}
    assert shown >= {
        "hundreds_of_mx",
        "mx_is_cname",
        "domain_is_cname",
        "cname_loop",
        "private_mx",
        "dns_silent",
        "hundreds_of_addresses",
    }


def test_hostile_world_stays_in_its_addresses() -> None:
    """Its mail hosts and name server use 127.0.53.150-159 only (the issue's share)."""
    used = [HOSTILE.dns.address, *(host.address for host in HOSTILE.hosts)]
    assert all(150 <= int(address.rsplit(".", 1)[1]) <= 159 for address in used)
    assert all(address.startswith("127.0.53.") for address in used)


def test_a_network_expands_to_its_host_addresses() -> None:
    """a_network publishes one A record per host address of the network."""
    addresses = domain("mx.many.hostile.test").a
    network = ipaddress.IPv4Network("127.0.54.0/23")
    assert len(addresses) == network.num_addresses - 2
    assert all(ipaddress.IPv4Address(a) in network for a in addresses)


def test_junk_exchanges_are_named_under_the_domain() -> None:
    """junk_mx adds that many MX names, none of them defined in the world."""
    junk = domain("hundreds-mx.test").junk_exchanges()
    assert len(junk) == len(set(junk)) == 300
    assert all(name.endswith(".hundreds-mx.test") for name in junk)
    assert not any(HOSTILE.domain(name) or HOSTILE.mail_host(name) for name in junk)


@pytest.mark.parametrize(
    ("entry", "fragments"),
    [
        (
            {"name": "a.test", "cname": "b.test", "mx": MX},
            ["'a.test'", "cname is given with mx", "RFC 1034"],
        ),
        (
            {"name": "a.test", "cname": "b.test", "txt": ["x"], "a": ["127.0.0.1"]},
            ["cname is given with a, txt"],
        ),
        ({"name": "a.test", "cname": "b.example"}, ["cname 'b.example' is outside the zones"]),
        ({"name": "a.test", "cname": "b..test"}, ["cname 'b..test' is not a valid DNS name"]),
        (
            {"name": "a.test", "private_a": ["10.0.0.1"]},
            ["private_a '10.0.0.1' is not an RFC 5737", "192.0.2.x"],
        ),
        ({"name": "a.test", "private_a": ["nope"]}, ["private_a 'nope'"]),
        ({"name": "a.test", "a_network": "10.0.0.0/24"}, ["not a loopback network"]),
        ({"name": "a.test", "a_network": "127.0.0.0/16"}, ["at most 1024", "/22 or longer"]),
        ({"name": "a.test", "a_network": "127.0.54.1/23"}, ["not an IPv4 network"]),
        ({"name": "a.test", "a_network": ["127.0.54.0/23"]}, ["a_network must be a string"]),
        ({"name": "a.test", "junk_mx": 5000}, ["junk_mx = 5000 is out of range", "0..1000"]),
        (
            {"name": "a.test", "mx": [{"preference": 10, "host": "mx.b.test"}]},
            ["'mx.b.test' is referenced but not defined", "[[domains]] entry", "cname"],
        ),
    ],
)
def test_invalid_hostile_entry_is_explained(entry: dict[str, Any], fragments: list[str]) -> None:
    """Each mistake in a hostile DNS entry names the entry and the fix."""
    with pytest.raises(WorldError) as raised:
        World.from_dict({"hosts": [HOST], "domains": [entry]}, source="w.toml")
    message = str(raised.value)
    assert message.startswith("w.toml: ") and message.endswith(".")
    for fragment in fragments:
        assert fragment in message


def test_mx_may_name_a_domain_of_the_world() -> None:
    """An MX may name a [[domains]] entry (a CNAME or a name with A records), not only a host."""
    world = World.from_dict(
        {
            "hosts": [HOST],
            "domains": [
                {"name": "a.test", "mx": [{"preference": 10, "host": "alias.test"}]},
                {"name": "alias.test", "cname": "mx.a.test"},
            ],
        }
    )
    assert world.mail_host("alias.test") == world.host("mx.a.test")


# ---------------------------------------------------------------- CNAMEs in the world


@pytest.mark.parametrize(
    ("name", "served"),
    [
        ("hundreds-mx.test", True),
        ("mx-cname.test", True),  # its MX is a CNAME of the host
        ("alias.test", True),  # the domain is a CNAME of a domain the host serves
        ("mx-loop-backup.test", True),
        ("cname-loop.test", False),
        ("mx-loop.test", False),
        ("many-addresses.test", False),
    ],
)
def test_serves_follows_cnames(name: str, served: bool) -> None:
    """The working host serves the domains whose routes reach it, loops or not."""
    assert HOSTILE.serves(HOSTILE.host("mx.ok.hostile.test"), domain(name)) is served


def _graph_world(links: list[int | None]) -> World:
    """Names n0..nK.test: ``links[i]`` is the index of ni's CNAME target, or None for
    "ni has the host's address"."""
    domains: list[dict[str, Any]] = []
    for index, target in enumerate(links):
        entry: dict[str, Any] = {"name": f"n{index}.test"}
        if target is None:
            entry["a"] = [HOST["address"]]
        else:
            entry["cname"] = f"n{target}.test"
        domains.append(entry)
    return World.from_dict({"hosts": [HOST], "domains": domains})


_GRAPHS = st.integers(1, 8).flatmap(
    lambda size: st.lists(st.none() | st.integers(0, size - 1), min_size=size, max_size=size)
)


@given(links=_GRAPHS)
def test_mail_host_agrees_with_walking_the_chain(links: list[int | None]) -> None:
    """mail_host ends on any CNAME graph: the host when the chain reaches an address, else None."""
    world = _graph_world(links)
    position: int | None = 0
    for _ in range(len(links)):  # a chain without a loop is shorter than the graph
        target = links[position] if position is not None else None
        if target is None:
            break
        position = target
    reaches_host = position is not None and links[position] is None
    expected = world.host("mx.a.test") if reaches_host else None
    assert world.mail_host("n0.test") == expected


# ---------------------------------------------------------------- name server answers


def _answer(world: World, name: str, rdtype: str) -> dns.message.Message:
    response = Authority(world).respond(dns.message.make_query(name, rdtype))
    assert response is not None
    return response


def test_cname_chain_is_answered_whole() -> None:
    """An A question about a CNAME gets the CNAME and the target's A (RFC 1034 §4.3.2)."""
    response = _answer(HOSTILE, "mx.alias.hostile.test", "A")
    assert [rrset.rdtype for rrset in response.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert response.answer[1][0].to_text() == HOSTILE.host("mx.ok.hostile.test").address


def test_cname_question_gets_the_cname_only() -> None:
    """A CNAME question is answered by the CNAME itself, not followed."""
    response = _answer(HOSTILE, "cname-loop.test", "CNAME")
    assert [rrset.to_text() for rrset in response.answer] == [
        "cname-loop.test. 300 IN CNAME cname-loop-back.test."
    ]


def test_cname_loop_is_answered_up_to_the_repeat() -> None:
    """A loop is answered once around, NOERROR with the SOA: the client notices the loop."""
    response = _answer(HOSTILE, "cname-loop.test", "MX")
    owners = [rrset.name.to_text() for rrset in response.answer]
    assert owners == ["cname-loop.test.", "cname-loop-back.test."]
    assert response.rcode() == dns.rcode.NOERROR
    assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]


def test_dangling_cname_is_nxdomain_with_the_chain() -> None:
    """A CNAME to a missing name: the chain, and the last name's NXDOMAIN (RFC 6604 §2)."""
    world = World.from_dict({"domains": [{"name": "a.test", "cname": "gone.test"}]})
    response = _answer(world, "a.test", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.rdtype for rrset in response.answer] == [dns.rdatatype.CNAME]


def test_junk_mx_records_come_after_the_real_ones() -> None:
    """Junk MX records have a preference after every listed one."""
    response = _answer(HOSTILE, "hundreds-mx.test", "MX")
    (mx,) = response.answer
    real = [r for r in mx if r.exchange == dns.name.from_text("mx.ok.hostile.test")]
    junk = [r for r in mx if r not in real]
    assert len(real) == 1 and len(junk) == 300
    assert all(r.preference > real[0].preference for r in junk)


@given(links=_GRAPHS)
@settings(max_examples=60, deadline=None)
def test_name_server_follows_any_cname_graph_boundedly(links: list[int | None]) -> None:
    """Each link answered is the graph's, no owner twice; an A ends the chain iff it reaches one."""
    world = _graph_world(links)
    response = _answer(world, "n0.test", "A")
    cnames = [rrset for rrset in response.answer if rrset.rdtype == dns.rdatatype.CNAME]
    owners = [rrset.name.to_text(omit_final_dot=True) for rrset in cnames]
    assert len(owners) == len(set(owners)) <= len(links)
    for rrset in cnames:
        index = int(rrset.name.labels[0][1:])
        assert rrset[0].target.to_text(omit_final_dot=True) == f"n{links[index]}.test"
    addresses = [rrset for rrset in response.answer if rrset.rdtype == dns.rdatatype.A]
    assert bool(addresses) is (world.mail_host("n0.test") is not None)
