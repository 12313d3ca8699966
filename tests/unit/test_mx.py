"""MX selection: preference order, shuffling, null MX, implicit MX, address scopes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.mx import (
    AddressScope,
    MxRecord,
    NullMx,
    address_scope,
    implicit_mx,
    order_mx,
    probe_allowed,
    usable_addresses,
)


def test_lower_preference_first() -> None:
    """Hosts come out in ascending preference (RFC 5321 §5.1)."""
    records = [MxRecord(30, "c.example"), MxRecord(10, "a.example"), MxRecord(20, "b.example")]
    assert order_mx(records, random.Random(1)) == ("a.example", "b.example", "c.example")


def test_equal_preference_is_shuffled() -> None:
    """Equal-preference hosts appear in more than one order across seeds."""
    records = [MxRecord(10, f"mx{i}.example") for i in range(4)]
    orders = {order_mx(records, random.Random(seed)) for seed in range(50)}
    assert len(orders) > 1
    assert all(sorted(o) == sorted(r.exchange for r in records) for o in orders)  # type: ignore[arg-type]


def test_shuffle_stays_within_preference_group() -> None:
    """Shuffling never moves a host ahead of a better preference."""
    records = [MxRecord(10, "a1"), MxRecord(10, "a2"), MxRecord(20, "b1"), MxRecord(20, "b2")]
    for seed in range(30):
        hosts = order_mx(records, random.Random(seed))
        assert isinstance(hosts, tuple)
        assert set(hosts[:2]) == {"a1", "a2"} and set(hosts[2:]) == {"b1", "b2"}


@pytest.mark.parametrize("exchange", ["", "."])
def test_null_mx_alone_means_no_mail(exchange: str) -> None:
    """A lone "MX 0 ." is a null MX (RFC 7505 §3)."""
    assert order_mx([MxRecord(0, exchange)], random.Random(0)) == NullMx()


def test_null_mx_beside_real_records_is_ignored() -> None:
    """A null MX published with real MX records is ignored (RFC 7505 §3 violation)."""
    assert order_mx([MxRecord(0, ""), MxRecord(10, "mx.example")], random.Random(0)) == (
        "mx.example",
    )


def test_no_records_gives_no_hosts() -> None:
    """An empty record list is not a null MX: the caller falls back to the implicit MX."""
    assert order_mx([], random.Random(0)) == ()


def test_duplicate_exchange_keeps_best_preference() -> None:
    """A host listed twice is tried once, at its best preference."""
    records = [MxRecord(50, "MX.example."), MxRecord(5, "mx.example"), MxRecord(10, "b.example")]
    assert order_mx(records, random.Random(0)) == ("mx.example", "b.example")


def test_limit_caps_hosts() -> None:
    """``limit`` caps how many hosts are tried."""
    records = [MxRecord(i, f"mx{i}.example") for i in range(10)]
    assert order_mx(records, random.Random(0), limit=3) == (
        "mx0.example",
        "mx1.example",
        "mx2.example",
    )


def test_implicit_mx_is_the_domain() -> None:
    """Without MX records the domain itself is the mail host (RFC 5321 §5.1)."""
    assert implicit_mx("Example.ORG.") == ("example.org",)


@pytest.mark.parametrize(
    ("address", "scope"),
    [
        ("8.8.8.8", AddressScope.PUBLIC),
        ("2001:4860:4860::8888", AddressScope.PUBLIC),
        ("127.0.0.1", AddressScope.LOOPBACK),
        ("127.0.53.10", AddressScope.LOOPBACK),
        ("::1", AddressScope.LOOPBACK),
        ("10.1.2.3", AddressScope.PRIVATE),
        ("172.16.0.1", AddressScope.PRIVATE),
        ("192.168.1.1", AddressScope.PRIVATE),
        ("100.64.0.1", AddressScope.PRIVATE),  # carrier-grade NAT, not global
        ("192.0.2.1", AddressScope.PRIVATE),  # TEST-NET-1
        ("fc00::1", AddressScope.PRIVATE),
        ("169.254.1.1", AddressScope.LINK_LOCAL),
        ("fe80::1", AddressScope.LINK_LOCAL),
        ("224.0.0.1", AddressScope.MULTICAST),
        ("0.0.0.0", AddressScope.UNSPECIFIED),
        ("::", AddressScope.UNSPECIFIED),
        ("240.0.0.1", AddressScope.RESERVED),
        ("::ffff:10.0.0.1", AddressScope.PRIVATE),  # IPv4-mapped cannot smuggle a private target
        ("::ffff:127.0.0.1", AddressScope.LOOPBACK),
        ("2002:a00:1::1", AddressScope.PRIVATE),  # 6to4 embedding 10.0.0.1
        ("2002:808:808::1", AddressScope.PUBLIC),  # 6to4 embedding 8.8.8.8
        ("fec0::1", AddressScope.PRIVATE),  # deprecated site-local
        ("not-an-ip", AddressScope.RESERVED),
    ],
)
def test_address_scope(address: str, scope: AddressScope) -> None:
    """Addresses are classified by where they live."""
    assert address_scope(address) is scope


@pytest.mark.parametrize(
    ("address", "default", "allowed"),
    [
        ("8.8.8.8", True, True),
        ("127.0.0.1", False, True),
        ("10.0.0.1", False, True),
        ("169.254.0.1", False, True),
        ("240.0.0.1", False, True),
        ("224.0.0.1", False, False),
        ("0.0.0.0", False, False),
    ],
)
def test_probe_allowed(address: str, default: bool, allowed: bool) -> None:
    """Private ranges need allow_private; multicast and unspecified never."""
    assert probe_allowed(address, allow_private=False) is default
    assert probe_allowed(address, allow_private=True) is allowed


def test_usable_addresses_filters_in_order() -> None:
    """Only probe-able addresses are kept, in their order."""
    assert usable_addresses(["10.0.0.1", "8.8.8.8", "1.1.1.1"], allow_private=False) == (
        "8.8.8.8",
        "1.1.1.1",
    )


@given(
    st.lists(
        st.tuples(st.integers(0, 65535), st.from_regex(r"[a-z]{1,8}\.example", fullmatch=True)),
        max_size=20,
    ),
    st.integers(),
)
def test_order_mx_properties(pairs: list[tuple[int, str]], seed: int) -> None:
    """Every distinct host appears once, and preferences never decrease along the order."""
    records = [MxRecord(p, e) for p, e in pairs]
    hosts = order_mx(records, random.Random(seed))
    assert isinstance(hosts, tuple)
    best = {}
    for p, e in pairs:
        best[e] = min(p, best.get(e, p))
    assert sorted(hosts) == sorted(best)
    prefs = [best[h] for h in hosts]
    assert prefs == sorted(prefs)
