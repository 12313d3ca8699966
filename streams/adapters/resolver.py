"""DNS over ``dns.asyncresolver``, answering with core values.

Every query has an explicit lifetime. Outcomes the verdict rules care about
are values, never exceptions: NXDOMAIN, "no answer" (NODATA), SERVFAIL (which
includes REFUSED and every name server failing) and timeout are kept apart,
because only the first is a fact about the domain.

Hostile answers stay bounded. A CNAME is followed (dnspython follows the
chain inside an answer), also when an MX names one, which RFC 2181 §10.3
forbids but mail servers follow; a chain longer than dnspython's 16 links,
which is what a CNAME loop becomes, is a SERVFAIL: a broken zone, not proof
that the name does not exist. A truncated UDP answer (TC) is asked again
over TCP. A host with hundreds of addresses gives only its first
``max_addresses_per_host``, so a probe never walks them all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from streams.core.mx import DnsProblem, HostAddresses, MxAnswer, MxRecord
from streams.errors import ConfigError

__all__ = ["Resolver", "ResolverConfig", "parse_name_server"]


@dataclass(frozen=True, slots=True)
class ResolverConfig:
    """What the resolver needs from Settings."""

    name_servers: tuple[tuple[str, int], ...] = ()  # empty: the system resolver
    lifetime: float = 10.0  # seconds for one lookup, all retries included
    ttl_floor: int = 60  # cache MX facts at least this long...
    ttl_ceiling: int = 86_400  # ...and at most this long
    max_addresses_per_host: int = 4  # the first addresses of a host (IPv4 first) to keep

    def __post_init__(self) -> None:
        """Refuse a cap that would leave every mail host without an address.

        Raises:
            ConfigError: ``max_addresses_per_host`` is below 1.
        """
        if self.max_addresses_per_host < 1:
            raise ConfigError(
                f"max_addresses_per_host is {self.max_addresses_per_host}; it must be at "
                "least 1, or no mail host could ever be probed."
            )


def parse_name_server(text: str) -> tuple[str, int]:
    """Parse ``HOST[:PORT]`` (``[v6]:PORT`` for IPv6) into an address and a port.

    Raises:
        ConfigError: when the host is not an IP address or the port is not 1-65535.
    """
    import ipaddress

    value = text.strip()
    host, port_text = value, ""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"DNS server {text!r} is not an IP address; give it as HOST[:PORT] with an IP, "
            "for example --dns-server 127.0.53.53:10053."
        ) from None
    if not port_text:
        return host, 53
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"DNS server {text!r} has an invalid port; use a number from 1 to 65535.")
    return host, int(port_text)


class Resolver:
    """MX and address lookups with explicit lifetimes and TTL clamping."""

    def __init__(self, config: ResolverConfig) -> None:
        """Build the underlying dnspython resolver.

        Raises:
            ConfigError: when no name server is given and the system has none configured.
        """
        self._config = config
        if config.name_servers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port) for host, port in config.name_servers
            ]
        else:
            try:
                resolver = dns.asyncresolver.Resolver(configure=True)
            except dns.resolver.NoResolverConfiguration:
                raise ConfigError(
                    "This machine has no system DNS resolver configured; "
                    "name one with --dns-server HOST[:PORT]."
                ) from None
        resolver.lifetime = config.lifetime
        resolver.timeout = min(config.lifetime, max(1.0, config.lifetime / 3))
        resolver.cache = None  # mxprobe keeps its own TTL-clamped facts
        self._resolver = resolver

    def _clamp(self, ttl: int) -> int:
        return max(self._config.ttl_floor, min(self._config.ttl_ceiling, ttl))

    async def mx(self, domain: str) -> MxAnswer | DnsProblem:
        """Look up the MX records of ``domain`` (its ASCII form)."""
        answer = await self._query(domain, dns.rdatatype.MX)
        if isinstance(answer, DnsProblem):
            return answer
        if answer.rrset is None:
            return MxAnswer(records=(), ttl=self._clamp(_negative_ttl(answer)))
        records = tuple(
            MxRecord(
                preference=int(rdata.preference),
                exchange=rdata.exchange.to_text(omit_final_dot=True).lower()
                if rdata.exchange != dns.name.root
                else "",
            )
            for rdata in answer.rrset
        )
        return MxAnswer(records=records, ttl=self._clamp(answer.rrset.ttl))

    async def addresses(self, host: str) -> HostAddresses | DnsProblem:
        """Look up A and AAAA of ``host`` together.

        NXDOMAIN only when both say so; a failure of one is ignored when the
        other gave addresses; no records at all is an empty ``HostAddresses``.
        At most ``max_addresses_per_host`` addresses are kept, IPv4 first.
        """
        a, aaaa = await asyncio.gather(
            self._query(host, dns.rdatatype.A), self._query(host, dns.rdatatype.AAAA)
        )
        found: list[str] = []
        ttls: list[int] = []
        problems: list[DnsProblem] = []
        for answer in (a, aaaa):
            if isinstance(answer, DnsProblem):
                problems.append(answer)
            elif answer.rrset is not None:
                found.extend(rdata.to_text() for rdata in answer.rrset)
                ttls.append(answer.rrset.ttl)
        if found:
            kept = tuple(found[: self._config.max_addresses_per_host])
            return HostAddresses(addresses=kept, ttl=self._clamp(min(ttls)))
        if problems and (len(problems) == 2 or DnsProblem.NXDOMAIN not in problems):
            # Both failed: prefer the failure that says least against the host.
            for problem in (DnsProblem.TIMEOUT, DnsProblem.SERVFAIL, DnsProblem.NXDOMAIN):
                if problem in problems:
                    return problem
        return HostAddresses(addresses=(), ttl=self._config.ttl_floor)

    async def _query(
        self, name: str, rdtype: dns.rdatatype.RdataType
    ) -> dns.resolver.Answer | DnsProblem:
        try:
            return await self._resolver.resolve(
                name, rdtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN:
            return DnsProblem.NXDOMAIN
        except dns.exception.Timeout:
            return DnsProblem.TIMEOUT
        except (dns.resolver.NoNameservers, dns.resolver.YXDOMAIN, dns.exception.DNSException):
            # NoNameservers: every server answered SERVFAIL/REFUSED or broke the protocol.
            return DnsProblem.SERVFAIL


def _negative_ttl(answer: dns.resolver.Answer) -> int:
    """The negative-caching TTL of a NODATA answer: the SOA minimum (RFC 2308 §5)."""
    for rrset in answer.response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(min(rrset.ttl, rrset[0].minimum))
    return 0


def name_servers_from(texts: Sequence[str]) -> tuple[tuple[str, int], ...]:
    """Parse every ``HOST[:PORT]`` of a setting (see :func:`parse_name_server`)."""
    return tuple(parse_name_server(text) for text in texts)
