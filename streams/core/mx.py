"""MX answers → mail hosts to try, in order (RFC 5321 §5.1, RFC 7505).

Pure: the resolver adapter turns DNS answers into :class:`MxRecord` values and
asks this module which hosts to try and which addresses may be probed.
"""

from __future__ import annotations

import enum
import ipaddress
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "TEMPORARY_DNS",
    "AddressScope",
    "DnsProblem",
    "HostAddresses",
    "MxAnswer",
    "MxRecord",
    "NullMx",
    "address_scope",
    "implicit_mx",
    "order_mx",
    "probe_allowed",
    "usable_addresses",
]


@dataclass(frozen=True, slots=True, order=True)
class MxRecord:
    """One MX record: lower preference is tried first (RFC 5321 §5.1)."""

    preference: int
    exchange: str  # host name, lower case, no trailing dot; "" for the root ("." in DNS)


@dataclass(frozen=True, slots=True)
class MxAnswer:
    """The MX records of a domain (empty when it has none) and their TTL in seconds."""

    records: tuple[MxRecord, ...]
    ttl: int


@dataclass(frozen=True, slots=True)
class HostAddresses:
    """The A and AAAA addresses of a host (IPv4 first) and their TTL in seconds."""

    addresses: tuple[str, ...]
    ttl: int


@dataclass(frozen=True, slots=True)
class NullMx:
    """The domain publishes a null MX: it accepts no mail at all (RFC 7505 §3)."""


def order_mx(
    records: Sequence[MxRecord], rng: random.Random, *, limit: int | None = None
) -> tuple[str, ...] | NullMx:
    """Return the exchanges to try, best first, or :class:`NullMx`.

    Records are sorted by preference; records of equal preference are
    shuffled with ``rng`` so load spreads as RFC 5321 §5.1 asks. A null MX
    (preference 0, exchange ".") alone means no mail is accepted (RFC 7505
    §3); a null MX published beside real MX records violates RFC 7505 §3 and
    is ignored in favour of the real ones (a sending MTA would use them too).
    Duplicate exchanges keep their best preference. ``limit`` caps how many
    hosts are returned.

    Args:
        records: the MX records as published; may be empty.
        rng: the source of randomness for equal-preference ordering.
        limit: the most hosts to return, or None for all.

    Returns:
        Host names to try in order, or ``NullMx()``.
    """
    real = [r for r in records if r.exchange not in ("", ".")]
    if records and not real:
        return NullMx()
    best: dict[str, int] = {}
    for record in real:
        name = record.exchange.rstrip(".").lower()
        if name not in best or record.preference < best[name]:
            best[name] = record.preference
    groups: dict[int, list[str]] = {}
    for name, preference in best.items():
        groups.setdefault(preference, []).append(name)
    ordered: list[str] = []
    for preference in sorted(groups):
        group = sorted(groups[preference])
        rng.shuffle(group)
        ordered.extend(group)
    return tuple(ordered if limit is None else ordered[:limit])


def implicit_mx(domain: str) -> tuple[str, ...]:
    """The implicit MX of a domain without MX records: the domain itself (RFC 5321 §5.1)."""
    return (domain.rstrip(".").lower(),)


class DnsProblem(enum.StrEnum):
    """Why DNS gave no mail host to probe.

    The first three are facts about the domain (mail cannot be delivered);
    the others say only that we could not find out (never "undeliverable").
    """

    NXDOMAIN = "nxdomain"  # the domain does not exist
    NULL_MX = "null_mx"  # RFC 7505: the domain accepts no mail
    NO_MAIL_SERVER = "no_mail_server"  # no MX, no A/AAAA; or no MX target resolves
    SERVFAIL = "servfail"  # the name servers failed (or refused) to answer
    TIMEOUT = "timeout"  # no answer within the lifetime
    PRIVATE_MX = "private_mx"  # every mail host address is private and that is not allowed


#: DNS problems that may be gone on the next lookup (the name servers failed,
#: or did not answer in time); every other problem is a fact about the domain.
TEMPORARY_DNS: frozenset[DnsProblem] = frozenset({DnsProblem.SERVFAIL, DnsProblem.TIMEOUT})


class AddressScope(enum.StrEnum):
    """Where an IP address lives; only ``PUBLIC`` is probed by default."""

    PUBLIC = "public"
    LOOPBACK = "loopback"
    PRIVATE = "private"
    LINK_LOCAL = "link_local"
    MULTICAST = "multicast"
    UNSPECIFIED = "unspecified"
    RESERVED = "reserved"


def address_scope(address: str) -> AddressScope:
    """Classify an IPv4 or IPv6 address; anything unparsable is ``RESERVED``.

    IPv4-mapped (``::ffff:10.0.0.1``) and 6to4 (``2002:0a00:0001::``)
    IPv6 addresses are judged by the IPv4 address they embed, so they cannot
    smuggle a private target past the check.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return AddressScope.RESERVED
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_site_local:  # fec0::/10, deprecated (RFC 3879) but still private
            return AddressScope.PRIVATE
        embedded = ip.ipv4_mapped or ip.sixtofour  # 6to4 (RFC 3056) embeds an IPv4 too
        if embedded is not None:
            ip = embedded
    # Order matters: loopback and link-local are also "private" to ipaddress.
    if ip.is_unspecified:
        return AddressScope.UNSPECIFIED
    if ip.is_loopback:
        return AddressScope.LOOPBACK
    if ip.is_link_local:
        return AddressScope.LINK_LOCAL
    if ip.is_multicast:
        return AddressScope.MULTICAST
    if ip.is_reserved:
        return AddressScope.RESERVED
    if ip.is_private or not ip.is_global:
        return AddressScope.PRIVATE
    return AddressScope.PUBLIC


def probe_allowed(address: str, *, allow_private: bool) -> bool:
    """May an SMTP probe connect to ``address``?

    Public addresses always; loopback, private, link-local and reserved ones
    only with ``allow_private`` (otherwise anyone could
    point an MX at your internal network). Multicast and unspecified
    addresses never.
    """
    scope = address_scope(address)
    if scope is AddressScope.PUBLIC:
        return True
    if scope in (AddressScope.MULTICAST, AddressScope.UNSPECIFIED):
        return False
    return allow_private


def usable_addresses(addresses: Iterable[str], *, allow_private: bool) -> tuple[str, ...]:
    """The addresses of a host that may be probed, in the order given."""
    return tuple(a for a in addresses if probe_allowed(a, allow_private=allow_private))
