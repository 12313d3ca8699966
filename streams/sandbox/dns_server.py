"""The sandbox's authoritative name server, over UDP and TCP.

:class:`Authority` answers queries from a :class:`~streams.sandbox.world.World`
with dnspython's message handling; :class:`DnsServer` puts it on the network
(UDP, and TCP with the 2-byte length prefix of RFC 1035 §4.2.2).

Answers are authoritative (AA) for names inside the world's zones: A, AAAA,
MX, TXT, CNAME, SOA and NS records; NODATA and NXDOMAIN carry the zone's SOA in
the authority section so resolvers can cache them (RFC 2308 §3); names outside
the zones are REFUSED; garbage gets FORMERR and never crashes the server.
A CNAME is followed inside the zones and the whole chain answered, as an
authoritative server does (RFC 1034 §4.3.2 step 3a; the rcode is the last
name's, RFC 6604 §2); a chain that loops is answered up to where it repeats,
for the client to notice. UDP answers larger than the client's EDNS payload
(512 octets without EDNS, RFC 1035 §4.2.1; RFC 6891 §6.2.5) first lose their
additional section (RFC 2181 §9), and if still too large are sent empty with
TC=1 so the client retries over TCP. Per-domain ``servfail`` and ``drop`` make
the server answer SERVFAIL or stay silent for that exact name (not for a name
reached through a CNAME).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import Counter
from collections.abc import Mapping
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

from streams.sandbox.connections import ConnectionTasks
from streams.sandbox.world import World

__all__ = ["Authority", "DnsServer"]

_log = logging.getLogger(__name__)

_UDP_DEFAULT_PAYLOAD = 512  # RFC 1035 §4.2.1, and the floor for EDNS payloads (RFC 6891 §6.2.5)
_TCP_IDLE_TIMEOUT = 10.0  # RFC 7766 §6.2.3: servers may close idle connections after seconds
_MAX_CHAIN = 16  # CNAMEs followed for one answer, as dnspython's client follows at most


class Authority:
    """Answers DNS queries for a world's zones; counts queries per (name, type).

    ``truncated`` counts the answers sent empty with TC=1, per (name, type).

    Args:
        world: the world whose names, records and failures to serve.
    """

    def __init__(self, world: World) -> None:
        self.queries: Counter[tuple[str, str]] = Counter()
        self.truncated: Counter[tuple[str, str]] = Counter()
        self._zones = [dns.name.from_text(zone) for zone in world.dns.zones]
        self._records: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = {}
        self._soa: dict[dns.name.Name, dns.rrset.RRset] = {}
        self._servfail = {dns.name.from_text(d.name) for d in world.domains if d.servfail}
        self._drop = {dns.name.from_text(d.name) for d in world.domains if d.drop}
        self._build(world)
        self._exists = self._with_empty_non_terminals()

    def _build(self, world: World) -> None:
        ttl, negative = world.dns.ttl, world.dns.negative_ttl
        for zone in world.dns.zones:
            apex, ns = dns.name.from_text(zone), f"ns.{zone}."
            # RFC 2308 §5: the negative TTL is the smaller of the SOA TTL and SOA minimum.
            soa = f"{ns} hostmaster.{zone}. 1 3600 600 86400 {negative}"
            self._soa[apex] = self._add(apex, negative, "SOA", soa)
            self._add(apex, ttl, "NS", ns)
            self._add(dns.name.from_text(ns), ttl, "A", world.dns.address)
        for host in world.hosts:
            self._add(dns.name.from_text(host.name), ttl, "A", host.address)
        for domain in world.domains:
            name = dns.name.from_text(domain.name)
            domain_ttl = ttl if domain.ttl is None else domain.ttl
            mx = ["0 ."] if domain.null_mx else [f"{r.preference} {r.host}." for r in domain.mx]
            junk = max((r.preference for r in domain.mx), default=0) + 10  # after the real ones
            mx += [f"{junk} {exchange}." for exchange in domain.junk_exchanges()]
            cname = [f"{domain.cname}."] if domain.cname is not None else []
            for rdtype, values in (
                ("MX", mx),
                ("A", (*domain.a, *domain.private_a)),
                ("AAAA", domain.aaaa),
                ("CNAME", cname),
            ):
                for value in values:
                    self._add(name, domain_ttl, rdtype, value)
            for text in domain.txt:
                data = text.encode("utf-8")
                # A TXT character-string holds at most 255 octets (RFC 1035 §3.3.14).
                chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
                rdata = dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)
                self._merge(dns.rrset.from_rdata(name, domain_ttl, rdata))
            if name not in self._records:
                self._records.setdefault(name, {})  # the name exists, with no records (NODATA)

    def _add(self, name: dns.name.Name, ttl: int, rdtype: str, value: str) -> dns.rrset.RRset:
        return self._merge(dns.rrset.from_text(name, ttl, "IN", rdtype, value))

    def _merge(self, rrset: dns.rrset.RRset) -> dns.rrset.RRset:
        by_type = self._records.setdefault(rrset.name, {})
        existing = by_type.get(rrset.rdtype)
        if existing is None:
            by_type[rrset.rdtype] = rrset
            return rrset
        for rdata in rrset:  # a name that is both a host and a domain: one rrset per type
            existing.add(rdata, rrset.ttl)
        return existing

    def _with_empty_non_terminals(self) -> frozenset[dns.name.Name]:
        # RFC 8020: a name above an existing name exists (NODATA), never NXDOMAIN.
        exists: set[dns.name.Name] = set()
        for name in self._records:
            zone = self._zone_of(name)
            while zone is not None and name.is_subdomain(zone) and name not in exists:
                exists.add(name)
                name = name.parent()
        return frozenset(exists)

    def _zone_of(self, name: dns.name.Name) -> dns.name.Name | None:
        zones = [zone for zone in self._zones if name.is_subdomain(zone)]
        return max(zones, key=len, default=None)

    def handle(self, wire: bytes, *, udp: bool) -> bytes | None:
        """Answer one query message; None when no answer must be sent.

        Args:
            wire: the query as received.
            udp: whether it came over UDP (answers are then size-limited).
        """
        try:
            query = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError, KeyError, IndexError, struct.error):
            return _form_error(wire)
        if query.flags & dns.flags.QR:
            return None  # a response, not a query: never answer it (no reflection loops)
        response = self.respond(query)
        if response is None:
            return None
        limit = 65535
        if udp:
            limit = max(_UDP_DEFAULT_PAYLOAD, query.payload) if query.edns >= 0 else 512
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            pass
        if response.additional:
            # RFC 2181 §9: additional data may be left out without setting TC.
            response.additional = []
            try:
                return response.to_wire(max_size=limit)
            except dns.exception.TooBig:
                pass
        # RFC 2181 §9: set TC; an empty answer makes the client retry over TCP.
        response.flags |= dns.flags.TC
        response.answer, response.authority = [], []
        self.truncated[_key(query.question[0])] += 1
        return response.to_wire(max_size=limit)

    def respond(self, query: dns.message.Message) -> dns.message.Message | None:
        """The response to a parsed ``query``, or None for a dropped name."""
        response = dns.message.make_response(query)
        if query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)  # RFC 6891 §6.1.3: only version 0
            return response
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        name, rdtype = question.name, question.rdtype
        self.queries[_key(question)] += 1
        zone = self._zone_of(name)
        if question.rdclass != dns.rdataclass.IN or zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        if name in self._drop:
            return None
        if name in self._servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        response.flags |= dns.flags.AA
        name = self._follow_cnames(name, rdtype, response)
        zone = self._zone_of(name)
        if zone is None:
            return response  # the chain leaves the zones: the client asks elsewhere
        if name not in self._exists:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(self._soa[zone])
            return response
        records = self._records.get(name, {})
        if rdtype == dns.rdatatype.ANY and records:
            response.answer.extend(records.values())
        elif rdtype in records:
            response.answer.append(records[rdtype])
            if rdtype == dns.rdatatype.MX:
                response.additional.extend(self._exchange_addresses(records[rdtype]))
        else:
            response.authority.append(self._soa[zone])  # NODATA (RFC 2308 §2.2), also after a CNAME
        return response

    def _follow_cnames(
        self, name: dns.name.Name, rdtype: int, response: dns.message.Message
    ) -> dns.name.Name:
        """Answer the CNAME chain that starts at ``name``; return the name it ends at.

        Not for CNAME or ANY questions, which the CNAME itself answers. A loop
        ends where a name repeats, a long chain after ``_MAX_CHAIN`` CNAMEs.
        """
        if rdtype in (dns.rdatatype.CNAME, dns.rdatatype.ANY):
            return name
        seen: set[dns.name.Name] = set()
        while name not in seen and len(seen) < _MAX_CHAIN:
            cname = self._records.get(name, {}).get(dns.rdatatype.CNAME)
            if cname is None:
                break
            seen.add(name)
            response.answer.append(cname)
            name = cname[0].target
        return name

    def _exchange_addresses(self, mx: dns.rrset.RRset) -> list[dns.rrset.RRset]:
        found = []
        for rdata in mx:
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                rrset = self._records.get(rdata.exchange, {}).get(rdtype)
                if rrset is not None:
                    found.append(rrset)
        return found


def _key(question: dns.rrset.RRset) -> tuple[str, str]:
    """How queries are counted: the asked name in lower case, and the type."""
    return question.name.to_text(omit_final_dot=True).lower(), dns.rdatatype.to_text(
        question.rdtype
    )


def _form_error(wire: bytes) -> bytes | None:
    """A FORMERR answer echoing the ID and opcode of an unparsable query, if it has a header."""
    if len(wire) < 12:
        return None  # no header: nobody to answer
    query_id, flags = struct.unpack("!HH", wire[:4])
    if flags & dns.flags.QR:
        return None
    response = dns.message.Message(id=query_id)
    response.flags = dns.flags.QR | (flags & 0x7800)  # keep the opcode bits (RFC 1035 §4.1.1)
    response.set_rcode(dns.rcode.FORMERR)
    return response.to_wire()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, authority: Authority) -> None:
        self._authority = authority
        self._transport: asyncio.DatagramTransport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        try:
            answer = self._authority.handle(data, udp=True)
        except Exception:  # pragma: no cover - a sandbox bug must not stop the server
            _log.exception("sandbox name server: unexpected error answering a query")
            return
        if answer is not None and self._transport is not None:
            self._transport.sendto(answer, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors from clients that went away: nothing to do

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class DnsServer:
    """The name server of a world, on ``world.dns.address`` over UDP and TCP.

    Args:
        world: the world to serve.
    """

    def __init__(self, world: World) -> None:
        self.address = world.dns.address
        self.authority = Authority(world)
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_protocol: _UdpProtocol | None = None
        self._tcp: asyncio.Server | None = None
        self._connections = ConnectionTasks(self._serve_tcp, name="name server")

    @property
    def port(self) -> int:
        """The port listened on (0 before :meth:`start`)."""
        if self._udp is None:
            return 0
        return int(self._udp.get_extra_info("sockname")[1])

    @property
    def queries(self) -> Mapping[tuple[str, str], int]:
        """Queries received so far per (name, type), e.g. ``("strict.test", "MX")``."""
        return self.authority.queries

    async def start(self, port: int) -> None:
        """Listen on UDP and TCP ``address:port``; port 0 picks one free for both.

        Raises:
            OSError: the address or port cannot be bound.
        """
        loop = asyncio.get_running_loop()
        attempts = 5 if port == 0 else 1
        for attempt in range(attempts):
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self.authority), local_addr=(self.address, port)
            )
            self._udp, self._udp_protocol = transport, protocol
            try:
                self._tcp = await asyncio.start_server(
                    self._connections.accept, host=self.address, port=self.port, reuse_address=True
                )
                return
            except OSError:
                # The free UDP port may be taken for TCP: try another (only when we chose it).
                transport.close()
                await protocol.closed
                self._udp = self._udp_protocol = None
                if attempt == attempts - 1:
                    raise

    async def stop(self) -> None:
        """Stop listening and close every open TCP connection."""
        if self._udp is not None and self._udp_protocol is not None:
            self._udp.close()
            await self._udp_protocol.closed
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
        await self._connections.stop_all()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # RFC 1035 §4.2.2 / RFC 7766: several length-prefixed queries per connection.
        while True:
            async with asyncio.timeout(_TCP_IDLE_TIMEOUT):
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                wire = await reader.readexactly(length)
            answer = self.authority.handle(wire, udp=False)
            if answer is not None:
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
