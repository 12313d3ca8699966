"""workload(): generated benchmark worlds: counts, spread, known users, mix, seeds, errors."""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.sandbox import Behaviour, World, load_world
from streams.sandbox.workload import (
    BEHAVIOURS,
    GREYLIST_DELAY,
    TARPIT_DELAYS,
    RateLimit,
    workload,
)


def domain_of(email: str) -> str:
    return email.rpartition("@")[2]


def known(world: World, email: str) -> bool:
    """Whether ``email`` is a known user of its domain in ``world``."""
    local, _, name = email.rpartition("@")
    domain = world.domain(name)
    assert domain is not None
    return domain.knows(local)


def behaviour_of(world: World, email: str) -> Behaviour:
    """The behaviour of the mail host that ``email``'s domain points at."""
    domain = world.domain(domain_of(email))
    assert domain is not None
    [mx] = domain.mx
    return world.host(mx.host).behaviour


def check_invariants(world: World, emails: list[str], addresses: int, domains: int) -> None:
    """What every workload promises, whatever its sizes."""
    assert len(emails) == len(set(emails)) == addresses
    assert len(world.domains) == domains
    per_domain = collections.Counter(domain_of(email) for email in emails)
    counts = [per_domain[d.name] for d in world.domains]
    assert max(counts) - min(counts) <= 1
    per_host = collections.Counter(d.mx[0].host for d in world.domains)
    assert max(per_host.values()) - min(per_host.values()) <= 1
    assert set(per_host) == {h.name for h in world.hosts}  # every host serves a domain
    for email in emails:
        domain = world.domain(domain_of(email))
        assert domain is not None
        assert world.serves(world.host(domain.mx[0].host), domain)
    expected = {e.address: e for e in world.expectations}
    assert set(expected) == set(emails)
    for email in emails:
        answers = BEHAVIOURS[behaviour_of(world, email)]
        answer = answers[0] if known(world, email) else answers[1]
        expectation = expected[email]
        assert f"{expectation.status}/{expectation.reason}" == answer


@pytest.mark.parametrize(
    ("addresses", "domains", "hosts"),
    [(1, 1, 1), (5000, 20, 4), (7, 3, 2), (10, 10, 10), (3, 8, 4), (250, 100, 100)],
)
def test_counts_and_spread(addresses: int, domains: int, hosts: int) -> None:
    """The world has the hosts and domains asked for, the addresses spread evenly over them."""
    world, emails = workload(addresses, domains, hosts)
    assert [h.name for h in world.hosts] == [f"mx{i}.bench.test" for i in range(hosts)]
    assert [h.address for h in world.hosts] == [f"127.0.53.{130 + i}" for i in range(hosts)]
    assert [d.name for d in world.domains] == [f"d{j}.bench.test" for j in range(domains)]
    check_invariants(world, emails, addresses, domains)


def test_the_default_benchmark_shape() -> None:
    """5,000 addresses over 20 domains on 4 hosts: 250 a domain, 5 domains and 1,250 a host."""
    world, emails = workload(5000, 20, 4)
    per_domain = collections.Counter(domain_of(email) for email in emails)
    assert set(per_domain.values()) == {250}
    per_host = collections.Counter(behaviour_host(world, email) for email in emails)
    assert per_host == {f"mx{i}.bench.test": 1250 for i in range(4)}
    assert sum(len(d.users) for d in world.domains) == 500


def behaviour_host(world: World, email: str) -> str:
    domain = world.domain(domain_of(email))
    assert domain is not None
    return domain.mx[0].host


def test_dns_and_smtp_are_the_default_worlds() -> None:
    """The name server and SMTP sections are those of the packaged world (zone "test")."""
    world, _ = workload(10, 2, 2)
    default = load_world()
    assert world.dns == default.dns
    assert world.smtp == default.smtp
    assert world.dns.zones == ("test",)
    addresses = {h.address for h in world.hosts} | {world.dns.address}
    assert not addresses & {h.address for h in default.hosts}  # both can be served at once


@pytest.mark.parametrize(
    ("addresses", "share", "expected"),
    [(5000, 0.1, 500), (8, 0.25, 2), (7, 0.0, 0), (7, 1.0, 7), (1000, 0.333, 333)],
)
def test_known_share(addresses: int, share: float, expected: int) -> None:
    """That share of the addresses are known users; the others are unknown."""
    world, emails = workload(addresses, 4, 2, known_share=share)
    assert sum(known(world, email) for email in emails) == expected


def test_known_and_unknown_users_expect_their_verdicts_on_strict_hosts() -> None:
    """Known users are expected deliverable/accepted, unknown ones mailbox_not_found."""
    world, _ = workload(100, 5, 5, known_share=0.3)
    outcomes = collections.Counter(
        (known(world, e.address), f"{e.status}/{e.reason}") for e in world.expectations
    )
    assert outcomes == {
        (True, "deliverable/accepted"): 30,
        (False, "undeliverable/mailbox_not_found"): 70,
    }


def test_the_same_arguments_give_the_same_workload() -> None:
    """Deterministic: the seed decides, not the process."""
    assert workload(300, 7, 3, seed=5) == workload(300, 7, 3, seed=5)


def test_the_seed_picks_the_known_users() -> None:
    """Another seed keeps the addresses but knows other users."""
    first, emails = workload(300, 7, 3, seed=1)
    second, same_emails = workload(300, 7, 3, seed=2)
    assert emails == same_emails
    assert [d.users for d in first.domains] != [d.users for d in second.domains]
    assert sum(len(d.users) for d in first.domains) == sum(len(d.users) for d in second.domains)


def test_first_address_moves_the_hosts() -> None:
    """The hosts take consecutive addresses from 127.0.53.first_address."""
    world, _ = workload(10, 3, 3, first_address=60)
    assert [h.address for h in world.hosts] == ["127.0.53.60", "127.0.53.61", "127.0.53.62"]


THIRD = 1 / 3


@pytest.mark.parametrize(
    ("hosts", "mix", "expected"),
    [
        (4, None, {"strict": 4}),
        (
            4,
            {"strict": 0.5, "greylist": 0.25, "rate_limit": 0.25},
            {"strict": 2, "greylist": 1, "rate_limit": 1},
        ),
        (
            3,
            {"strict": THIRD, "catch_all": THIRD, "tarpit": THIRD},
            {"strict": 1, "catch_all": 1, "tarpit": 1},
        ),
        (3, {"catch_all": 0.5, "strict": 0.5}, {"catch_all": 2, "strict": 1}),  # a tie: first named
        (10, {"strict": 0.64, "catch_all": 0.36}, {"strict": 6, "catch_all": 4}),
        (5, {"greylist": 1.0, "strict": 0.0}, {"greylist": 5}),
        (4, {Behaviour.MULTILINE: 1.0}, {"multiline": 4}),
    ],
)
def test_mix_shares_out_the_hosts(
    hosts: int, mix: Mapping[str, float] | None, expected: dict[str, int]
) -> None:
    """Each behaviour gets its share of the hosts, rounded by largest remainder."""
    world, emails = workload(40, hosts * 2, hosts, mix=mix)
    assert collections.Counter(h.behaviour.value for h in world.hosts) == expected
    check_invariants(world, emails, 40, hosts * 2)


def test_behaviour_parameters() -> None:
    """Greylisting and tarpit hosts get the short delays; rate_limit hosts the limits given."""
    limit = RateLimit(max_rcpt=1100, max_connections=13, window=10.0)
    mix = {"greylist": 0.25, "tarpit": 0.25, "rate_limit": 0.25, "strict": 0.25}
    world, _ = workload(8, 4, 4, mix=mix, rate_limit=limit)
    by_behaviour = {h.behaviour: h for h in world.hosts}
    assert by_behaviour[Behaviour.GREYLIST].greylist_delay == GREYLIST_DELAY
    tarpit = by_behaviour[Behaviour.TARPIT]
    assert (tarpit.banner_delay, tarpit.reply_delay) == TARPIT_DELAYS
    limited = by_behaviour[Behaviour.RATE_LIMIT]
    assert (limited.max_rcpt, limited.max_connections, limited.window) == (1100, 13, 10.0)


@pytest.mark.parametrize(
    ("behaviour", "known_user", "first", "after_retry"),
    [
        ("catch_all", True, "risky/accept_all", ""),
        ("catch_all", False, "risky/accept_all", ""),
        ("greylist", True, "unknown/greylisted", "deliverable/accepted"),
        ("greylist", False, "unknown/greylisted", "undeliverable/mailbox_not_found"),
        ("cannot_verify", False, "risky/cannot_verify", ""),
        ("policy_block", True, "unknown/blocked", ""),
        ("tarpit", True, "deliverable/accepted", ""),
    ],
)
def test_expectations_follow_the_host_behaviour(
    behaviour: str, known_user: bool, first: str, after_retry: str
) -> None:
    """Each address expects what its host's behaviour answers (greylisting: after a retry too)."""
    world, _ = workload(20, 1, 1, mix={behaviour: 1.0}, known_share=0.5)
    [expectation] = [e for e in world.expectations if known(world, e.address) is known_user][:1]
    assert f"{expectation.status}/{expectation.reason}" == first
    assert expectation.after_retry == after_retry
    assert expectation.behaviour == behaviour


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"hosts": 0}, "A workload has 1 to 100 mail hosts, not 0"),
        ({"hosts": 101, "domains": 200}, "not 101"),
        ({"hosts": 4, "domains": 3}, "4 hosts need 4 domains or more, not 3"),
        ({"addresses": 0}, "at least 1 address, not 0"),
        ({"known_share": 1.5}, "from 0 to 1, not 1.5"),
        ({"known_share": -0.1}, "not -0.1"),
        ({"known_share": math.nan}, "not nan"),
        ({"first_address": 0}, "choose first_address from 1 to 251"),
        ({"first_address": 252}, "127.0.53.252-255"),
        ({"first_address": 50}, "include the name server's 127.0.53.53"),
        ({"mix": {"down": 1.0}}, "names the behaviour 'down'"),
        ({"mix": {"strcit": 1.0}}, "use strict, catch_all, greylist"),
        ({"mix": {"strict": 0.5}}, "add up to 0.5, not 1"),
        ({"mix": {"strict": 0.75, "greylist": 0.5}}, "add up to 1.25"),
        ({"mix": {"strict": 1.5, "greylist": -0.5}}, "gives greylist the share -0.5"),
        ({"mix": {"strict": math.inf}}, "gives strict the share inf"),
        ({"mix": {"strict": 0.9, "greylist": 0.1}}, "greylist 10% of 4 hosts, which rounds"),
        ({"mix": {}}, "add up to 0, not 1"),
    ],
)
def test_bad_arguments_are_refused_with_the_fix(arguments: dict[str, object], message: str) -> None:
    """An argument out of range is a ValueError sentence naming it."""
    values: dict[str, object] = {"addresses": 10, "domains": 4, "hosts": 4, **arguments}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        workload(**values)  # type: ignore[arg-type]


@given(
    addresses=st.integers(1, 300),
    hosts=st.integers(1, 12),
    extra_domains=st.integers(0, 20),
    share=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32),
)
def test_any_workload_keeps_its_promises(
    addresses: int, hosts: int, extra_domains: int, share: float, seed: int
) -> None:
    """Counts, even spread, one serving MX per domain, and expectations matching the users."""
    domains = hosts + extra_domains
    world, emails = workload(addresses, domains, hosts, known_share=share, seed=seed)
    check_invariants(world, emails, addresses, domains)
    assert sum(known(world, email) for email in emails) == round(share * addresses)
