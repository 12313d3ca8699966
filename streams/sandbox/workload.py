"""Generated sandbox worlds for benchmarks: N addresses over M domains on K mail hosts.

:func:`workload` builds a :class:`~streams.sandbox.world.World` in the zone
``test`` and the list of addresses to verify against it, the same for the
same arguments:

- ``hosts`` mail hosts ``mx{i}.bench.test`` on ``127.0.53.{first_address + i}``,
  their behaviours shared out by ``mix`` (a share of the hosts each);
- ``domains`` domains ``d{j}.bench.test``, dealt round-robin over the hosts,
  one MX record each;
- ``addresses`` addresses ``user{k}@d{k % domains}.bench.test``, so every
  domain gets the same number give or take one, of which a ``known_share``
  drawn by ``seed`` are known users and the rest unknown.

The world carries an :class:`~streams.sandbox.world.Expectation` per address
(what its host's behaviour should make a verifier answer), so a benchmark can
check its verdicts as well as time them. The default addresses (130 and up)
stay clear of the default world's hosts (127.0.53.10-26) and name server
(127.0.53.53), so both worlds can be served side by side.

Example::

    world, emails = workload(5000, 20, 4)
    async with Sandbox(world, dns_port=0, smtp_port=0) as sandbox:
        ...
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from streams.sandbox.world import World
from streams.sandbox.world_parts import Behaviour, DnsConfig

__all__ = [
    "BEHAVIOURS",
    "DEFAULT_RATE_LIMIT",
    "GREYLIST_DELAY",
    "MAX_HOSTS",
    "TARPIT_DELAYS",
    "RateLimit",
    "parse_mix",
    "workload",
]

#: The most mail hosts a workload may have (their addresses are 127.0.53.x).
MAX_HOSTS = 100

#: Seconds a workload's greylisting host refuses a new triplet: one short
#: retry tier later it passes.
GREYLIST_DELAY = 1.0

#: A workload's tarpit host: seconds before the banner, and before every other reply.
TARPIT_DELAYS = (0.1, 0.01)

_ACCEPTED = "deliverable/accepted"
_NOT_FOUND = "undeliverable/mailbox_not_found"

#: The behaviours a workload's hosts may have, and the verdicts they should
#: give as (known user, unknown user), "status/reason". Left out are those that
#: measure failure handling rather than throughput: down (every connection
#: refused, so the circuit breaker pauses the host) and disconnect_after_rcpt
#: (one session per recipient).
BEHAVIOURS: Mapping[Behaviour, tuple[str, str]] = MappingProxyType(
    {
        Behaviour.STRICT: (_ACCEPTED, _NOT_FOUND),
        Behaviour.CATCH_ALL: ("risky/accept_all", "risky/accept_all"),
        Behaviour.GREYLIST: ("unknown/greylisted", "unknown/greylisted"),  # then as strict
        Behaviour.TARPIT: (_ACCEPTED, _NOT_FOUND),
        Behaviour.RATE_LIMIT: (_ACCEPTED, _NOT_FOUND),  # for a client within the limits
        Behaviour.MULTILINE: (_ACCEPTED, _NOT_FOUND),
        Behaviour.HELO_ONLY: (_ACCEPTED, _NOT_FOUND),
        Behaviour.NULL_SENDER_REFUSED: (_ACCEPTED, _NOT_FOUND),  # the probe has a MAIL FROM
        Behaviour.CANNOT_VERIFY: ("risky/cannot_verify", "risky/cannot_verify"),
        Behaviour.POLICY_BLOCK: ("unknown/blocked", "unknown/blocked"),
    }
)

_BY_NAME: Mapping[str, Behaviour] = MappingProxyType({b.value: b for b in BEHAVIOURS})
_MIX_TOLERANCE = 1e-6
_LAST_OCTET = 254  # 127.0.53.255 would be the /24's broadcast address


@dataclass(frozen=True, slots=True)
class RateLimit:
    """What a ``rate_limit`` host of a workload allows each client per sliding window.

    The defaults are a large provider's (as the default world's
    ``mx.limited.test``): above what mxprobe allows itself by default.
    """

    max_rcpt: int = 100  # RCPT commands per window; more get 421
    max_connections: int = 12  # connections per window; more get 421 at the greeting
    window: float = 60.0  # seconds


#: The limits of a workload's ``rate_limit`` hosts unless the caller gives others.
DEFAULT_RATE_LIMIT = RateLimit()


def workload(
    addresses: int,
    domains: int,
    hosts: int,
    *,
    mix: Mapping[str, float] | None = None,
    known_share: float = 0.1,
    seed: int = 0,
    first_address: int = 130,
    rate_limit: RateLimit = DEFAULT_RATE_LIMIT,
) -> tuple[World, list[str]]:
    """Build a benchmark world and the addresses to verify against it.

    Args:
        addresses: how many addresses (1 or more).
        domains: how many domains (at least ``hosts``, so every host serves one).
        hosts: how many mail hosts (1 to 100).
        mix: behaviour name → share of the hosts, the shares adding up to 1
            (default: every host ``strict``). Names are the keys of
            :data:`BEHAVIOURS`; greylisting and tarpit hosts use
            :data:`GREYLIST_DELAY` and :data:`TARPIT_DELAYS`.
        known_share: the share of the addresses that are known users (0 to 1).
        seed: picks which addresses are known.
        first_address: the last octet of the first host's address 127.0.53.x.
        rate_limit: the limits of the ``rate_limit`` hosts.

    Returns:
        The world, and the addresses in round-robin order of their domains.

    Raises:
        ValueError: an argument is out of range; the sentence names it and the fix.
    """
    _check_sizes(addresses, domains, hosts, known_share, first_address)
    behaviours = _host_behaviours(hosts, _shares(mix))
    known = frozenset(random.Random(seed).sample(range(addresses), round(known_share * addresses)))
    emails = [f"{_local_part(k)}@{_domain_name(k % domains)}" for k in range(addresses)]
    data = {
        "dns": {"zones": ["test"]},
        "hosts": [
            _host_entry(i, behaviour, first_address, rate_limit)
            for i, behaviour in enumerate(behaviours)
        ],
        "domains": _domain_entries(domains, hosts, known),
        "expect": [
            _expectation(email, behaviours[k % domains % hosts], known=k in known)
            for k, email in enumerate(emails)
        ],
    }
    source = f"workload({addresses}, {domains}, {hosts}, seed={seed})"
    return World.from_dict(data, source=source), emails


def _check_sizes(
    addresses: int, domains: int, hosts: int, known_share: float, first_address: int
) -> None:
    """Refuse sizes the world cannot have, with the fix."""
    if not 1 <= hosts <= MAX_HOSTS:
        raise ValueError(f"A workload has 1 to {MAX_HOSTS} mail hosts, not {hosts}; change hosts.")
    if domains < hosts:
        raise ValueError(
            f"A workload needs at least one domain per mail host, so {hosts} hosts need "
            f"{hosts} domains or more, not {domains}; raise domains or lower hosts."
        )
    if addresses < 1:
        raise ValueError(f"A workload needs at least 1 address, not {addresses}; raise addresses.")
    if not (math.isfinite(known_share) and 0.0 <= known_share <= 1.0):
        raise ValueError(
            f"known_share is the share of known users, from 0 to 1, not {known_share!r}."
        )
    last = first_address + hosts - 1
    if first_address < 1 or last > _LAST_OCTET:
        raise ValueError(
            f"The hosts' addresses 127.0.53.{first_address}-{last} leave 127.0.53.1-"
            f"{_LAST_OCTET}; choose first_address from 1 to {_LAST_OCTET - hosts + 1}."
        )
    name_server = int(DnsConfig().address.rsplit(".", 1)[1])
    if first_address <= name_server <= last:
        raise ValueError(
            f"The hosts' addresses 127.0.53.{first_address}-{last} include the name server's "
            f"{DnsConfig().address}; choose a first_address above {name_server} "
            "(the default is 130)."
        )


def _shares(mix: Mapping[str, float] | None) -> list[tuple[Behaviour, float]]:
    """The validated mix, in the order given (default: all strict)."""
    if mix is None:
        return [(Behaviour.STRICT, 1.0)]
    allowed = ", ".join(behaviour.value for behaviour in BEHAVIOURS)
    shares: list[tuple[Behaviour, float]] = []
    for name, share in mix.items():
        behaviour = _BY_NAME.get(name)
        if behaviour is None:
            raise ValueError(
                f"The mix names the behaviour {name!r}, which a workload host cannot have; "
                f"use {allowed}."
            )
        number = isinstance(share, int | float) and not isinstance(share, bool)
        if not (number and math.isfinite(share) and share >= 0):
            raise ValueError(
                f"The mix gives {name} the share {share!r}; give a number from 0 to 1."
            )
        shares.append((behaviour, float(share)))
    total = math.fsum(share for _, share in shares)
    if abs(total - 1.0) > _MIX_TOLERANCE:
        raise ValueError(
            f"The mix's shares add up to {total:g}, not 1; give each behaviour its share "
            "of the hosts, e.g. strict=0.75, greylist=0.25."
        )
    return shares


def _host_behaviours(hosts: int, shares: Sequence[tuple[Behaviour, float]]) -> list[Behaviour]:
    """The behaviour of each host: the shares in host counts, by largest remainder."""
    exact = [share * hosts for _, share in shares]
    counts = [math.floor(value) for value in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: counts[i] - exact[i])
    for i in by_remainder[: hosts - sum(counts)]:
        counts[i] += 1
    for (behaviour, share), count in zip(shares, counts, strict=True):
        if share > 0 and count == 0:
            raise ValueError(
                f"The mix gives {behaviour.value} {share:.0%} of {hosts} hosts, which rounds to "
                f"none; raise its share to at least {1 / hosts:.0%} or use more hosts."
            )
    return [
        behaviour
        for (behaviour, _), count in zip(shares, counts, strict=True)
        for _ in range(count)
    ]


def _host_entry(
    index: int, behaviour: Behaviour, first_address: int, rate_limit: RateLimit
) -> dict[str, Any]:
    """The ``[[hosts]]`` table of host ``index``."""
    entry: dict[str, Any] = {
        "name": _host_name(index),
        "address": f"127.0.53.{first_address + index}",
        "behaviour": behaviour.value,
    }
    if behaviour is Behaviour.GREYLIST:
        entry["greylist_delay"] = GREYLIST_DELAY
    elif behaviour is Behaviour.TARPIT:
        entry["banner_delay"], entry["reply_delay"] = TARPIT_DELAYS
    elif behaviour is Behaviour.RATE_LIMIT:
        entry["max_rcpt"] = rate_limit.max_rcpt
        entry["max_connections"] = rate_limit.max_connections
        entry["window"] = rate_limit.window
    return entry


def _host_name(index: int) -> str:
    return f"mx{index}.bench.test"


def _domain_name(index: int) -> str:
    return f"d{index}.bench.test"


def _local_part(index: int) -> str:
    return f"user{index}"


def _domain_entries(domains: int, hosts: int, known: frozenset[int]) -> list[dict[str, Any]]:
    """The ``[[domains]]`` tables: domain ``j`` on host ``j % hosts``, with its known users."""
    users: list[list[str]] = [[] for _ in range(domains)]
    for k in sorted(known):
        users[k % domains].append(_local_part(k))
    return [
        {
            "name": _domain_name(j),
            "mx": [{"preference": 10, "host": _host_name(j % hosts)}],
            "users": users[j],
        }
        for j in range(domains)
    ]


def _expectation(email: str, behaviour: Behaviour, *, known: bool) -> dict[str, str]:
    """The ``[[expect]]`` table of one address on a host with ``behaviour``."""
    first = BEHAVIOURS[behaviour][0 if known else 1]
    status, _, reason = first.partition("/")
    entry = {"address": email, "status": status, "reason": reason, "behaviour": behaviour.value}
    if behaviour is Behaviour.GREYLIST:
        entry["after_retry"] = BEHAVIOURS[Behaviour.STRICT][0 if known else 1]
    return entry


def parse_mix(text: str) -> dict[str, float] | None:
    """``"strict=0.75,greylist=0.25"`` → a mix for :func:`workload`; empty → None (all strict).

    Raises:
        ValueError: an entry is not ``behaviour=share``.
    """
    mix: dict[str, float] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, equals, share = entry.partition("=")
        try:
            mix[name.strip()] = float(share)
        except ValueError:
            equals = ""
        if not equals:
            raise ValueError(f"--mix entry {entry!r} is not behaviour=share, e.g. strict=0.75.")
    return mix or None
