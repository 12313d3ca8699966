"""Domain routes: when a cached route may be used, how long DNS problems last, and
how a route is found from the MX answer (rounds of exchange lookups)."""

from __future__ import annotations

import random

import pytest

from streams.core.mx import DnsProblem, HostAddresses, MxAnswer, MxRecord
from streams.core.route import (
    FAILURE_TTL,
    MX_LOOKUP_ROUNDS,
    DomainRoute,
    RouteResolution,
    Target,
    problem_ttl,
    route_problem,
)

NOW = 1_700_000_000.0
P = DnsProblem
PUBLIC = "93.184.216.34"


# --- DomainRoute.usable ----------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_in", "age", "max_age", "usable"),
    [
        (60.0, 10.0, None, True),  # within its TTL, no bound on age
        (0.0, 10.0, None, False),  # expires now: resolve anew
        (-5.0, 10.0, None, False),  # expired
        (60.0, 10.0, 30.0, True),  # younger than max_age
        (60.0, 30.0, 30.0, True),  # exactly max_age old still counts
        (60.0, 31.0, 30.0, False),  # older than max_age, though its TTL runs on
        (60.0, 0.0, 0.0, True),  # max_age 0: only an answer from this very instant
        (60.0, 0.5, 0.0, False),  # max_age 0: anything older is resolved anew
        (-5.0, 0.0, 3600.0, False),  # a generous max_age never outlives the TTL
    ],
)
def test_a_cached_route_is_usable_within_its_ttl_and_max_age(
    expires_in: float, age: float, max_age: float | None, usable: bool
) -> None:
    """A route serves while its TTL runs and it is no older than the request's max_age."""
    route = DomainRoute(expires_at=NOW + expires_in, resolved_at=NOW - age)
    assert route.usable(NOW, max_age) is usable


# --- problem_ttl -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("problem", "ttl", "remembered"),
    [
        (P.NXDOMAIN, 3600, 3600.0),  # a fact: for its TTL
        (P.NULL_MX, 86_400, 86_400.0),
        (P.NO_MAIL_SERVER, 120, 120.0),
        (P.PRIVATE_MX, 600, 600.0),
        (P.TIMEOUT, 3600, FAILURE_TTL),  # a failure to find out: briefly
        (P.SERVFAIL, 3600, FAILURE_TTL),
    ],
)
def test_facts_last_their_ttl_failures_briefly(
    problem: DnsProblem, ttl: int, remembered: float
) -> None:
    """What DNS says about a domain lasts its TTL; a failure to ask lasts 30 s."""
    assert problem_ttl(problem, ttl) == remembered


def test_a_problem_without_a_ttl_lasts_five_minutes() -> None:
    """An MX lookup's NXDOMAIN carries no TTL here: it is remembered 300 s."""
    assert problem_ttl(P.NXDOMAIN) == 300.0


# --- route_problem ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("addresses_found", "problems", "all_asked", "problem"),
    [
        (True, [], True, P.PRIVATE_MX),  # addresses exist, none may be probed
        (True, [P.TIMEOUT], False, P.PRIVATE_MX),
        (False, [P.TIMEOUT, P.SERVFAIL], True, P.TIMEOUT),
        (False, [P.NXDOMAIN, P.TIMEOUT], True, P.TIMEOUT),
        (False, [P.SERVFAIL, P.NXDOMAIN], True, P.SERVFAIL),
        (False, [P.NXDOMAIN], False, P.SERVFAIL),  # exchanges left unasked prove nothing
        (False, [], False, P.SERVFAIL),
        (False, [P.NXDOMAIN, P.NXDOMAIN], True, P.NO_MAIL_SERVER),  # every one answered
        (False, [], True, P.NO_MAIL_SERVER),  # every one answered with no address
    ],
)
def test_the_route_problem_says_least_against_the_domain(
    addresses_found: bool, problems: list[DnsProblem], all_asked: bool, problem: DnsProblem
) -> None:
    """No mail server only when every exchange answered with no address."""
    assert (
        route_problem(addresses_found=addresses_found, problems=problems, all_asked=all_asked)
        is problem
    )


# --- RouteResolution ----------------------------------------------------------------


def mx(*exchanges: str, ttl: int = 3600) -> MxAnswer:
    """MX records of increasing preference, in the order given."""
    records = tuple(MxRecord(10 * (i + 1), name) for i, name in enumerate(exchanges))
    return MxAnswer(records=records, ttl=ttl)


def resolve(
    answer: MxAnswer | DnsProblem,
    hosts: dict[str, HostAddresses | DnsProblem],
    *,
    max_mx_hosts: int = 5,
    allow_private: bool = False,
) -> tuple[DomainRoute, list[tuple[str, ...]]]:
    """Run a resolution against a table of address lookups; the route and each round."""
    resolution = RouteResolution(
        "example.test",
        answer,
        random.Random(0),
        max_mx_hosts=max_mx_hosts,
        allow_private=allow_private,
    )
    rounds: list[tuple[str, ...]] = []
    while names := resolution.next_hosts():
        rounds.append(names)
        resolution.feed([hosts.get(name, P.NXDOMAIN) for name in names])
    return resolution.route(NOW), rounds


def test_an_mx_problem_is_the_route_at_once() -> None:
    """A failed MX lookup leaves nothing to look up and is the route's problem."""
    route, rounds = resolve(P.SERVFAIL, {})
    assert (route.problem, route.expires_at, rounds) == (P.SERVFAIL, NOW + FAILURE_TTL, [])


def test_a_null_mx_means_no_mail_for_its_ttl() -> None:
    """A lone null MX (RFC 7505) needs no address lookup and lasts the MX TTL."""
    route, rounds = resolve(MxAnswer(records=(MxRecord(0, ""),), ttl=7200), {})
    assert (route.problem, route.expires_at, rounds) == (P.NULL_MX, NOW + 7200, [])


def test_no_mx_records_means_the_domain_itself() -> None:
    """Without MX records the domain is its own mail host (RFC 5321 §5.1)."""
    hosts = {"example.test": HostAddresses((PUBLIC,), ttl=600)}
    route, rounds = resolve(MxAnswer(records=(), ttl=900), hosts)
    assert rounds == [("example.test",)]
    assert route.targets == (Target("example.test", PUBLIC),)


def test_targets_follow_mx_order_and_expire_with_the_shortest_ttl() -> None:
    """Every exchange of the round gives its usable addresses, best MX first."""
    hosts = {
        "mx1.example.test": HostAddresses((PUBLIC,), ttl=600),
        "mx2.example.test": HostAddresses(("93.184.216.35",), ttl=300),
    }
    route, _ = resolve(mx("mx1.example.test", "mx2.example.test", ttl=3600), hosts)
    assert route.targets == (
        Target("mx1.example.test", PUBLIC),
        Target("mx2.example.test", "93.184.216.35"),
    )
    assert route.expires_at == NOW + 300


def test_rounds_stop_at_the_first_that_finds_an_address() -> None:
    """Exchanges after a round with an address are not looked up."""
    hosts = {"b.example.test": HostAddresses((PUBLIC,), ttl=600)}
    route, rounds = resolve(
        mx("a.example.test", "b.example.test", "c.example.test"), hosts, max_mx_hosts=1
    )
    assert rounds == [("a.example.test",), ("b.example.test",)]
    assert route.targets == (Target("b.example.test", PUBLIC),)


def test_rounds_are_bounded() -> None:
    """At most MX_LOOKUP_ROUNDS rounds of max_mx_hosts lookups; the rest is unasked."""
    names = [f"mx{i}.example.test" for i in range(20)]
    route, rounds = resolve(mx(*names), {}, max_mx_hosts=2)
    assert sum(len(r) for r in rounds) == 2 * MX_LOOKUP_ROUNDS
    assert route.problem is P.SERVFAIL  # not proof that no exchange has an address


def test_every_exchange_without_address_is_no_mail_server() -> None:
    """All exchanges answered, none has an address: the domain has no mail server."""
    route, _ = resolve(mx("a.example.test", "b.example.test", ttl=900), {})
    assert (route.problem, route.expires_at) == (P.NO_MAIL_SERVER, NOW + 900)


def test_private_addresses_are_not_targets_by_default() -> None:
    """A mail host on a private address gives PRIVATE_MX unless private MX are allowed."""
    hosts = {"mx.example.test": HostAddresses(("10.0.0.25",), ttl=600)}
    refused, _ = resolve(mx("mx.example.test"), hosts)
    allowed, _ = resolve(mx("mx.example.test"), hosts, allow_private=True)
    assert refused.problem is P.PRIVATE_MX
    assert allowed.targets == (Target("mx.example.test", "10.0.0.25"),)


def test_a_timeout_wins_over_other_lookup_failures() -> None:
    """A lookup that timed out makes the route a timeout (retry soon), not a fact."""
    hosts: dict[str, HostAddresses | DnsProblem] = {"a.example.test": P.TIMEOUT}
    route, _ = resolve(mx("a.example.test", "b.example.test"), hosts)
    assert (route.problem, route.expires_at) == (P.TIMEOUT, NOW + FAILURE_TTL)


def test_feeding_the_wrong_number_of_lookups_is_refused() -> None:
    """One lookup per exchange named, or a ValueError."""
    resolution = RouteResolution(
        "example.test",
        mx("a.example.test"),
        random.Random(0),
        max_mx_hosts=5,
        allow_private=False,
    )
    with pytest.raises(ValueError, match="Expected 1 lookups"):
        resolution.feed([])


def test_the_route_is_not_known_before_the_lookups() -> None:
    """Asking for the route while exchanges wait to be looked up is a ValueError."""
    resolution = RouteResolution(
        "example.test",
        mx("a.example.test"),
        random.Random(0),
        max_mx_hosts=5,
        allow_private=False,
    )
    with pytest.raises(ValueError, match="not known yet"):
        resolution.route(NOW)


def test_max_mx_hosts_below_one_is_refused() -> None:
    """A round of no lookups would never end: max_mx_hosts is at least 1."""
    with pytest.raises(ValueError, match="max_mx_hosts"):
        RouteResolution(
            "example.test",
            mx("a.example.test"),
            random.Random(0),
            max_mx_hosts=0,
            allow_private=False,
        )
