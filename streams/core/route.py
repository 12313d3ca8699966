"""Where mail for a domain goes: the mail hosts' addresses to probe, in order.

A :class:`DomainRoute` is what resolving a domain taught (targets in MX
preference order, or the DNS problem that leaves none), with the times that
bound how long it may be used; a :class:`Target` is one address of one mail
host. Both are plain values: the resolver stage caches routes in its table,
the probe stage carries targets in its events, the SMTP adapter connects to
them.

:class:`RouteResolution` is how a route is found, without I/O (as dnspython's
``_Resolution``): fed the domain's MX answer, it names the exchanges to look
up next, is fed their address lookups, and at the end says the route.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from streams.core.mx import (
    TEMPORARY_DNS,
    DnsProblem,
    HostAddresses,
    MxAnswer,
    NullMx,
    implicit_mx,
    order_mx,
    usable_addresses,
)

__all__ = [
    "FAILURE_TTL",
    "MX_LOOKUP_ROUNDS",
    "DomainRoute",
    "RouteResolution",
    "Target",
    "problem_ttl",
    "route_problem",
]

#: Rounds of ``max_mx_hosts`` exchange lookups before a route gives up.
MX_LOOKUP_ROUNDS = 4

#: Seconds a DNS failure (timeout, SERVFAIL) is remembered: the next lookup may work.
FAILURE_TTL = 30.0

# The TTL of a DNS problem whose answer carried none (an MX lookup's NXDOMAIN).
_DEFAULT_TTL = 300

# DNS problems that say we could not find out, rather than a fact about the domain.


@dataclass(frozen=True, slots=True)
class Target:
    """One address of one mail host to connect to."""

    host: str
    address: str


@dataclass(frozen=True, slots=True)
class DomainRoute:
    """Where mail for a domain goes: targets in order, or why there are none."""

    targets: tuple[Target, ...] = ()
    problem: DnsProblem | None = None
    expires_at: float = 0.0
    resolved_at: float = 0.0  # when DNS gave this answer (seconds since the epoch)

    def usable(self, now: float, max_age: float | None = None) -> bool:
        """May this cached route serve a request at ``now``?

        Only before it expires (its DNS TTL) and, when the request bounds the
        age of what it trusts (``max_age`` seconds; 0 = always resolve anew),
        only while it is no older than that.
        """
        if self.expires_at <= now:
            return False
        return max_age is None or now - self.resolved_at <= max_age


def problem_ttl(problem: DnsProblem, ttl: int = _DEFAULT_TTL) -> float:
    """Seconds a domain's DNS problem is remembered.

    A fact about the domain (NXDOMAIN, null MX, no mail server, private MX)
    for the TTL DNS gave it (300 s when the answer carried none); a failure
    to find out (timeout, SERVFAIL) only for :data:`FAILURE_TTL`.
    """
    if problem in TEMPORARY_DNS:
        return FAILURE_TTL
    return float(ttl)


def route_problem(
    *, addresses_found: bool, problems: Collection[DnsProblem], all_asked: bool
) -> DnsProblem:
    """Why the exchanges' address lookups left a domain no target to probe.

    Args:
        addresses_found: some exchange has addresses, none of which may be probed.
        problems: the failed address lookups.
        all_asked: every exchange was looked up (none left beyond the rounds).

    Returns:
        PRIVATE_MX when addresses exist but none may be probed; else TIMEOUT
        when a lookup timed out; else SERVFAIL when one failed or some
        exchange was never asked (no proof that none has an address); else
        NO_MAIL_SERVER (every exchange answered, none has an address).
    """
    if addresses_found:
        return DnsProblem.PRIVATE_MX
    if DnsProblem.TIMEOUT in problems:
        return DnsProblem.TIMEOUT
    if DnsProblem.SERVFAIL in problems or not all_asked:
        return DnsProblem.SERVFAIL
    return DnsProblem.NO_MAIL_SERVER


class RouteResolution:
    """Finding a domain's route from its MX answer, sans I/O.

    Exchanges are looked up ``max_mx_hosts`` at a time, in MX order, until a
    round finds one with an address: unresolvable names first cannot hide
    the real host, and hundreds of MX records cost at most
    :data:`MX_LOOKUP_ROUNDS` rounds of lookups. A domain without MX records
    has its implicit MX, the domain itself (RFC 5321 §5.1); a null MX alone
    means no mail (RFC 7505).

    Use: ``while hosts := r.next_hosts(): r.feed(lookups of hosts)``, then
    ``r.route(now)``.
    """

    def __init__(
        self,
        domain: str,
        answer: MxAnswer | DnsProblem,
        rng: random.Random,
        *,
        max_mx_hosts: int,
        allow_private: bool,
    ) -> None:
        """Start from the domain's MX answer.

        Args:
            domain: the ASCII domain.
            answer: what the MX lookup said.
            rng: breaks ties between exchanges of equal preference.
            max_mx_hosts: exchanges looked up per round (at least 1).
            allow_private: private mail host addresses may be probed.

        Raises:
            ValueError: ``max_mx_hosts`` is below 1.
        """
        if max_mx_hosts < 1:
            raise ValueError(f"max_mx_hosts must be at least 1, not {max_mx_hosts!r}.")
        self._size = max_mx_hosts
        self._allow_private = allow_private
        self._problem: DnsProblem | None = None  # the MX answer's problem, if any
        self._ttl = _DEFAULT_TTL  # the shortest TTL of the answers that count
        self._ordered: tuple[str, ...] = ()  # the exchanges, best first
        self._asked: tuple[str, ...] = ()  # the exchanges the rounds may look up
        self._next = 0  # index in _asked of the next round's first exchange
        self._targets: list[Target] = []
        self._problems: list[DnsProblem] = []  # of the address lookups
        self._found = False  # some exchange has addresses (usable or not)
        if isinstance(answer, DnsProblem):
            self._problem = answer
            return
        self._ttl = answer.ttl
        ordered = order_mx(answer.records, rng) if answer.records else implicit_mx(domain)
        if isinstance(ordered, NullMx):
            self._problem = DnsProblem.NULL_MX
            return
        self._ordered = ordered
        self._asked = ordered[: max_mx_hosts * MX_LOOKUP_ROUNDS]

    def next_hosts(self) -> tuple[str, ...]:
        """The exchanges to look up next, or () once the route is known."""
        if self._problem is not None or self._found:
            return ()
        return self._asked[self._next : self._next + self._size]

    def feed(self, lookups: Sequence[HostAddresses | DnsProblem]) -> None:
        """The address lookups of the exchanges :meth:`next_hosts` named, in its order.

        Raises:
            ValueError: not one lookup per exchange named.
        """
        hosts = self.next_hosts()
        if len(lookups) != len(hosts):
            raise ValueError(f"Expected {len(hosts)} lookups, got {len(lookups)}.")
        for host, lookup in zip(hosts, lookups, strict=True):
            if isinstance(lookup, DnsProblem):
                self._problems.append(lookup)
                continue
            if lookup.addresses:
                self._ttl = min(self._ttl, lookup.ttl)
                self._found = True
            usable = usable_addresses(lookup.addresses, allow_private=self._allow_private)
            self._targets.extend(Target(host, ip) for ip in usable)
        self._next += len(hosts)

    def route(self, now: float) -> DomainRoute:
        """The route the answers so far give, expiring with their shortest TTL.

        Raises:
            ValueError: :meth:`next_hosts` still names exchanges to look up.
        """
        if self.next_hosts():
            raise ValueError("The route is not known yet: feed the lookups of next_hosts().")
        if self._problem is not None:
            return DomainRoute(
                problem=self._problem, expires_at=now + problem_ttl(self._problem, self._ttl)
            )
        if self._targets:
            return DomainRoute(targets=tuple(self._targets), expires_at=now + self._ttl)
        problem = route_problem(
            addresses_found=self._found,
            problems=self._problems,
            all_asked=len(self._asked) == len(self._ordered),
        )
        return DomainRoute(problem=problem, expires_at=now + problem_ttl(problem, self._ttl))
