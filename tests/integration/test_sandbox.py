"""The sandbox mail world: world files, the name server, the SMTP behaviours, the runner.

Servers run for real on loopback (free ports); clients are dnspython, aiosmtplib
and a raw socket client that shows replies exactly as they are sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosmtplib
import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.sandbox import Domain, Sandbox, SandboxError, World, WorldError, load_world
from streams.sandbox.dns_server import Authority, DnsServer

pytestmark = pytest.mark.integration

HOST = "127.0.53.110"  # the mail host of the small worlds built below
OTHER_HOST = "127.0.53.111"
TIMEOUT = 5.0


# ---------------------------------------------------------------- helpers and fixtures


def small_world(
    behaviour: str = "strict", *, smtp: dict[str, Any] | None = None, **host: Any
) -> World:
    """One host ``mx.a.test``: it serves ``a.test`` (alice, bob), not ``closed.test``."""
    mx = [{"preference": 10, "host": "mx.a.test"}]
    return World.from_dict(
        {
            "smtp": smtp or {},
            "hosts": [{"name": "mx.a.test", "address": HOST, "behaviour": behaviour, **host}],
            "domains": [
                {"name": "a.test", "mx": mx, "users": ["alice", "Bob"]},
                {"name": "closed.test", "mx": mx, "users": ["alice"], "served": False},
            ],
        }
    )


class Client:
    """A raw SMTP client: sends lines, returns reply lines exactly as received."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def reply(self) -> list[str]:
        """The lines of the next reply (without CRLF); [] when the server closed."""
        lines: list[str] = []
        async with asyncio.timeout(TIMEOUT):
            while True:
                raw = await self.reader.readline()
                if not raw:
                    return lines
                assert raw.endswith(b"\r\n"), raw
                lines.append(raw[:-2].decode("utf-8", "replace"))
                if raw[3:4] == b" ":
                    return lines

    async def send(self, line: str | bytes) -> list[str]:
        """Send one command line (CRLF added) and return its reply."""
        data = line.encode() if isinstance(line, str) else line
        self.writer.write(data + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def closed_by_server(self) -> bool:
        """Whether the server has closed the connection (EOF, or a reset)."""
        try:
            async with asyncio.timeout(TIMEOUT):
                return await self.reader.read(1) == b""
        except ConnectionResetError:
            return True


class Lab:
    """Starts sandboxes and clients for one test, and closes all of them afterwards."""

    def __init__(self, stack: contextlib.AsyncExitStack) -> None:
        self._stack = stack

    async def start(self, world: World) -> Sandbox:
        return await self._stack.enter_async_context(Sandbox(world, dns_port=0, smtp_port=0))

    async def connect(self, sandbox: Sandbox, address: str = HOST) -> Client:
        """A raw client connected to ``address`` (the banner not yet read)."""
        reader, writer = await asyncio.open_connection(address, sandbox.smtp_port)
        self._stack.push_async_callback(_close, writer)
        return Client(reader, writer)

    async def greeted(self, sandbox: Sandbox, address: str = HOST) -> Client:
        """A raw client past the banner and EHLO."""
        client = await self.connect(sandbox, address)
        assert (await client.reply())[0].startswith("220")
        assert (await client.send("EHLO probe.test"))[-1].startswith("250 ")
        return client

    async def smtp(self, sandbox: Sandbox, address: str = HOST, **options: Any) -> aiosmtplib.SMTP:
        """A connected aiosmtplib client (no TLS unless ``start_tls=True`` is given)."""
        options.setdefault("start_tls", False)
        client = aiosmtplib.SMTP(
            hostname=address,
            port=sandbox.smtp_port,
            timeout=TIMEOUT,
            local_hostname="probe.test",
            **options,
        )
        await client.connect()
        self._stack.callback(lambda: client.close() if client.is_connected else None)
        return client


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    async with contextlib.AsyncExitStack() as stack:
        yield Lab(stack)


@pytest.fixture
async def name_server() -> AsyncIterator[DnsServer]:
    """The default world's name server alone, on a free port."""
    server = DnsServer(load_world())
    await server.start(0)
    yield server
    await server.stop()


def resolver(address: str, port: int) -> dns.asyncresolver.Resolver:
    """A resolver that asks only the sandbox name server."""
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers, resolver.port, resolver.lifetime = [address], port, 2.0
    return resolver


async def ask(
    server: DnsServer, name: str, rdtype: str, *, tcp: bool = False, **query: Any
) -> dns.message.Message:
    """Send one raw query and return the whole response (all sections, all flags)."""
    message = dns.message.make_query(name, rdtype, **query)
    if tcp:
        return await dns.asyncquery.tcp(message, server.address, port=server.port, timeout=2.0)
    return await dns.asyncquery.udp(message, server.address, port=server.port, timeout=2.0)


async def rcpt_reply(client: aiosmtplib.SMTP, recipient: str) -> tuple[int, str]:
    """The (code, message) of RCPT TO, whether or not aiosmtplib calls it a refusal."""
    try:
        response = await client.rcpt(recipient)
    except aiosmtplib.SMTPRecipientRefused as refused:
        return refused.code, refused.message
    return response.code, response.message


# ---------------------------------------------------------------- the world file

# The default world as the sandbox brief specifies it: address -> (first verdict, after retry).
DEFAULT_EXPECTATIONS = {
    "alice@strict.test": ("deliverable/accepted", ""),
    "info@strict.test": ("deliverable/accepted", ""),
    "nobody@strict.test": ("undeliverable/mailbox_not_found", ""),
    "anyone@catchall.test": ("risky/accept_all", ""),
    "alice@greylist.test": ("unknown/greylisted", "deliverable/accepted"),
    "nobody@greylist.test": ("unknown/greylisted", "undeliverable/mailbox_not_found"),
    "alice@limited.test": ("deliverable/accepted", ""),
    "alice@ratelimited.test": ("unknown/throttled", ""),
    "alice@slow.test": ("deliverable/accepted", ""),
    "alice@tarpit.test": ("unknown/timeout", ""),
    "alice@blocked.test": ("unknown/blocked", ""),
    "alice@nullsender.test": ("deliverable/accepted", ""),
    "alice@cannotverify.test": ("risky/cannot_verify", ""),
    "alice@dropper.test": ("deliverable/accepted", ""),
    "nobody@dropper.test": ("undeliverable/mailbox_not_found", ""),
    "alice@failover.test": ("deliverable/accepted", ""),
    "alice@implicit.test": ("deliverable/accepted", ""),
    "alice@nullmx.test": ("undeliverable/null_mx", ""),
    "alice@nosuchdomain.test": ("undeliverable/no_such_domain", ""),
    "alice@nomail.test": ("undeliverable/no_mail_server", ""),
    "alice@deadmx.test": ("unknown/connection_failed", ""),
    "alice@multiline.test": ("deliverable/accepted", ""),
    "nobody@multiline.test": ("undeliverable/mailbox_not_found", ""),
    "alice@servfail.test": ("unknown/dns_error", ""),
    "alice@norelay.test": ("unknown/relay_denied", ""),
    "alice@throwaway.test": ("risky/disposable", ""),
    "alice@tls.test": ("deliverable/accepted", ""),
    "alice@oldhelo.test": ("deliverable/accepted", ""),
}

# Domain -> the behaviours of its MX hosts in preference order ([] = no MX records).
DEFAULT_MX_BEHAVIOURS = {
    "strict.test": ["strict"],
    "catchall.test": ["catch_all"],
    "greylist.test": ["greylist"],
    "limited.test": ["rate_limit"],
    "ratelimited.test": ["rate_limit"],
    "slow.test": ["tarpit"],
    "tarpit.test": ["tarpit"],
    "blocked.test": ["policy_block"],
    "nullsender.test": ["null_sender_refused"],
    "cannotverify.test": ["cannot_verify"],
    "dropper.test": ["disconnect_after_rcpt"],
    "failover.test": ["down", "strict"],
    "implicit.test": [],
    "nullmx.test": [],
    "nomail.test": [],
    "deadmx.test": ["down"],
    "multiline.test": ["multiline"],
    "servfail.test": ["strict"],
    "norelay.test": ["strict"],
    "throwaway.test": ["strict"],
    "tls.test": ["strict"],
    "oldhelo.test": ["helo_only"],
}


def test_default_world_expectations() -> None:
    """The packaged world expects exactly the verdicts of the brief's table."""
    world = load_world()
    found = {e.address: (f"{e.status}/{e.reason}", e.after_retry) for e in world.expectations}
    assert found == DEFAULT_EXPECTATIONS


def test_default_world_domains() -> None:
    """Every domain of the brief exists, with MX hosts of the right behaviours."""
    world = load_world()
    found = {
        d.name: [
            world.host(ref.host).behaviour.value for ref in sorted(d.mx, key=lambda r: r.preference)
        ]
        for d in world.domains
    }
    assert found == DEFAULT_MX_BEHAVIOURS


def test_default_world_settings() -> None:
    """Loopback DNS on 10053, SMTP on 10025, the demo sender, and the disposable signal."""
    world = load_world()
    assert (world.dns.address, world.dns.port, world.dns.zones) == ("127.0.53.53", 10053, ("test",))
    assert world.smtp.port == 10025
    assert world.probe.mail_from == "probe@mxprobe.test"
    assert world.disposable == ("throwaway.test",)
    assert all(h.address.startswith("127.0.53.") for h in world.hosts)


def test_default_world_delays_fit_the_timeout() -> None:
    """The slow host answers within the 10 s phase timeout; the tarpit's banner does not."""
    world = load_world()
    assert world.probe.timeout == 3.0
    slow, tarpit = world.host("mx.slow.test"), world.host("mx.tarpit.test")
    assert (slow.banner_delay, slow.reply_delay) == (1.0, 0.2)
    assert tarpit.banner_delay == 30.0 > world.probe.timeout


def test_default_world_special_domains() -> None:
    """implicit.test points at mx.strict.test; nullmx, norelay and servfail are flagged."""
    world = load_world()

    def domain(name: str) -> Domain:
        found = world.domain(name)
        assert found is not None, name
        return found

    assert domain("implicit.test").a == (world.host("mx.strict.test").address,)
    assert domain("implicit.test").mx == ()
    assert domain("nullmx.test").null_mx
    assert not domain("norelay.test").served
    assert domain("servfail.test").servfail
    assert domain("nomail.test").txt and not domain("nomail.test").a
    assert world.domain("nosuchdomain.test") is None


_MX = [{"preference": 10, "host": "mx.a.test"}]
_HOST = {"name": "mx.a.test", "address": HOST}


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        (
            {"hosts": [{**_HOST, "behaviour": "strickt"}]},
            ["[[hosts]] 'mx.a.test'", "'strickt' is unknown", "catch_all"],
        ),
        (
            {"domains": [{"name": "a.test", "mx": [{"preference": 10, "host": "mx.b.test"}]}]},
            [
                "[[domains]] 'a.test'",
                "'mx.b.test' is referenced but not defined",
                "add a [[hosts]] entry",
            ],
        ),
        (
            {"hosts": [{**_HOST, "address": "192.0.2.1"}]},
            ["'mx.a.test'", "outside 127.0.0.0/8", "loopback"],
        ),
        ({"dns": {"address": "10.0.0.1"}}, ["[dns]", "outside 127.0.0.0/8"]),
        ({"domains": [{"name": "a.test", "a": ["8.8.8.8"]}]}, ["'a.test'", "outside 127.0.0.0/8"]),
        (
            {"hosts": [_HOST, {"name": "mx.b.test", "address": HOST}]},
            ["[[hosts]] 'mx.b.test'", f"{HOST} is already used by [[hosts]] 'mx.a.test'"],
        ),
        ({"hosts": [{**_HOST, "address": "127.0.53.53"}]}, ["already used by [dns]"]),
        (
            {"hosts": [{**_HOST, "greylist_dely": 1}]},
            ["unknown key 'greylist_dely'", "rename it to 'greylist_delay'"],
        ),
        ({"domain": []}, ["top level", "unknown key 'domain'", "rename it to 'domains'"]),
        (
            {"hosts": [{**_HOST, "greylist_delay": 1.0}]},
            ["greylist_delay applies only to behaviour 'greylist'"],
        ),
        (
            {"hosts": [{**_HOST, "behaviour": "null_sender_refused", "reject_at": "data"}]},
            ["reject_at 'data' is unknown", '"rcpt"'],
        ),
        ({"smtp": {"port": "25"}}, ["[smtp]", "port must be an integer"]),
        ({"smtp": {"port": True}}, ["[smtp]", "port must be an integer"]),
        ({"smtp": {"idle_timeout": 0}}, ["[smtp]", "idle_timeout = 0 is not a duration", "> 0"]),
        ({"dns": {"port": 70000}}, ["[dns]", "out of range", "0..65535"]),
        (
            {"hosts": [{**_HOST, "behaviour": "tarpit", "banner_delay": -1}]},
            ["banner_delay = -1 is not a duration"],
        ),
        ({"hosts": [{"name": "mx.a.test"}]}, ["'mx.a.test'", "address is missing"]),
        (
            {"hosts": [{"name": "mx.example.com", "address": HOST}]},
            ["'mx.example.com'", "outside the zones", "[dns] zones"],
        ),
        ({"hosts": [{"name": "mx..test", "address": HOST}]}, ["not a valid DNS name"]),
        (
            {"hosts": [{"name": "ns.test", "address": HOST}]},
            ["reserved for the sandbox's name server"],
        ),
        (
            {"domains": [{"name": "a.test"}, {"name": "A.test."}]},
            ["[[domains]] 'a.test'", "defined twice"],
        ),
        (
            {"hosts": [_HOST], "domains": [{"name": "a.test", "null_mx": True, "mx": _MX}]},
            ["RFC 7505"],
        ),
        ({"domains": [{"name": "a.test", "servfail": True, "drop": True}]}, ["choose one of them"]),
        ({"domains": [{"name": "a.test", "aaaa": ["2001:db8::1"]}]}, ["not ::1"]),
        ({"domains": [{"name": "a.test", "users": ["a@b"]}]}, ["not a local part"]),
        (
            {"expect": [{"address": "a@a.test", "status": "valid", "reason": "ok"}]},
            ["status 'valid' is unknown"],
        ),
        (
            {"expect": [{"address": "a@a.test", "status": "risky", "reason": "Bad Reason"}]},
            ["not a reason code"],
        ),
        (
            {
                "expect": [
                    {
                        "address": "a@a.test",
                        "status": "unknown",
                        "reason": "greylisted",
                        "after_retry": "ok",
                    }
                ]
            },
            ["after_retry status 'ok' is unknown"],
        ),
        (
            {"expect": [{"address": "nobody", "status": "risky", "reason": "x"}]},
            ["has no local part or domain"],
        ),
        ({"hosts": {"name": "mx.a.test"}}, ["hosts must be an array of tables"]),
        ({"hosts": ["mx.a.test"]}, ["[[hosts]] entry 1", "expected a table"]),
    ],
)
def test_invalid_world_is_explained(data: dict[str, Any], fragments: list[str]) -> None:
    """An invalid world raises WorldError naming the source, the entry and the fix."""
    with pytest.raises(WorldError) as raised:
        World.from_dict(data, source="my-world.toml")
    message = str(raised.value)
    assert message.startswith("my-world.toml: ") and message.endswith(".")
    for fragment in fragments:
        assert fragment in message


def test_world_error_is_a_value_error() -> None:
    """WorldError is a ValueError and a SandboxError, so callers may catch either."""
    assert issubclass(WorldError, ValueError) and issubclass(WorldError, SandboxError)


def test_load_world_missing_file(tmp_path: Path) -> None:
    """A missing world file names the path and the way out."""
    path = tmp_path / "absent.toml"
    with pytest.raises(WorldError, match=r"absent\.toml: cannot read the world file"):
        load_world(path)


def test_load_world_invalid_toml(tmp_path: Path) -> None:
    """A file that is not TOML names the file and where parsing failed."""
    path = tmp_path / "broken.toml"
    path.write_text("[[hosts]\nname = 1\n")
    with pytest.raises(
        WorldError, match=r"broken.toml: the world file is not valid TOML \(.*line 1"
    ):
        load_world(path)


def test_load_world_from_file(tmp_path: Path) -> None:
    """A world file is read with its names normalised to lower case without the final dot."""
    path = tmp_path / "world.toml"
    path.write_text(
        '[[hosts]]\nname = "MX.A.test."\naddress = "127.0.53.110"\nbehaviour = "catch_all"\n'
        '[[domains]]\nname = "A.Test"\nmx = [{ preference = 5, host = "mx.a.test" }]\n'
        'users = ["Alice"]\n'
    )
    world = load_world(path)
    assert world.source == str(path)
    assert world.host("mx.a.test").behaviour == "catch_all"
    domain = world.domain("a.test")
    assert domain is not None and domain.knows("ALICE") and not domain.knows("bob")


def _containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    # A named function, not a lambda: hypothesis reads a lambda's source to
    # describe it, which is fragile when files change during a run.
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)


_TOML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    _containers,
    max_leaves=6,
)
_BASE_WORLD: dict[str, Any] = {
    "dns": {"address": "127.0.53.53", "zones": ["test"]},
    "smtp": {"port": 10025},
    "hosts": [{"name": "mx.a.test", "address": HOST, "behaviour": "rate_limit", "max_rcpt": 2}],
    "domains": [{"name": "a.test", "mx": _MX, "users": ["alice"]}],
    "expect": [{"address": "alice@a.test", "status": "deliverable", "reason": "accepted"}],
    "signals": {"disposable": ["a.test"]},
}
_KEYS = [
    "address",
    "port",
    "zones",
    "name",
    "behaviour",
    "max_rcpt",
    "mx",
    "users",
    "a",
    "txt",
    "ttl",
    "status",
    "x",
]


@given(
    table=st.sampled_from(["dns", "smtp", "hosts", "domains", "expect", "signals"]),
    key=st.sampled_from(_KEYS) | st.text(max_size=6),
    value=_TOML_VALUES,
)
@settings(max_examples=300, deadline=None)
def test_world_reader_never_fails_unexplained(table: str, key: str, value: object) -> None:
    """Any value anywhere gives a World or a WorldError, never another exception."""
    data = copy.deepcopy(_BASE_WORLD)
    entry = data[table]
    target: dict[str, Any] = entry[0] if isinstance(entry, list) else entry
    target[key] = value
    try:
        world = World.from_dict(data)
    except WorldError as error:
        assert str(error).startswith("<world>: ")
    else:
        assert isinstance(world, World)


# ---------------------------------------------------------------- the name server


@pytest.mark.parametrize(
    ("name", "rdtype", "expected"),
    [
        ("strict.test", "MX", ["10 mx.strict.test."]),
        ("failover.test", "MX", ["10 mx1.failover.test.", "20 mx2.failover.test."]),
        ("nullmx.test", "MX", ["0 ."]),
        ("mx.strict.test", "A", ["127.0.53.10"]),
        ("MX.Strict.Test", "A", ["127.0.53.10"]),
        ("implicit.test", "A", ["127.0.53.10"]),
        ("nomail.test", "TXT", ['"v=spf1 -all"']),
        ("test", "NS", ["ns.test."]),
        ("ns.test", "A", ["127.0.53.53"]),
    ],
)
async def test_dns_answers(
    name_server: DnsServer, name: str, rdtype: str, expected: list[str]
) -> None:
    """Names of the world get authoritative answers with the world's TTL."""
    response = await ask(name_server, name, rdtype)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    [rrset] = response.answer
    assert sorted(rdata.to_text() for rdata in rrset) == expected
    assert rrset.ttl == 300


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [
        ("implicit.test", "MX"),  # implicit MX: A only
        ("nomail.test", "MX"),  # TXT only
        ("nomail.test", "A"),
        ("strict.test", "A"),
        ("mx.strict.test", "AAAA"),  # no AAAA unless given
        ("mx.strict.test", "MX"),
    ],
)
async def test_dns_nodata(name_server: DnsServer, name: str, rdtype: str) -> None:
    """An existing name without that type: NOERROR, no answer, the zone SOA in authority."""
    response = await ask(name_server, name, rdtype)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert response.answer == []
    [soa] = response.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() == "test."


@pytest.mark.parametrize("name", ["nosuchdomain.test", "www.strict.test", "mx3.failover.test"])
async def test_dns_nxdomain(name_server: DnsServer, name: str) -> None:
    """An unknown name inside the zone: NXDOMAIN with the SOA (negative TTL 60) in authority."""
    response = await ask(name_server, name, "MX")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    [soa] = response.authority
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa[0].minimum == 60 and soa.ttl == 60


async def test_dns_servfail(name_server: DnsServer) -> None:
    """A domain marked servfail gets SERVFAIL."""
    response = await ask(name_server, "servfail.test", "MX")
    assert response.rcode() == dns.rcode.SERVFAIL


@pytest.mark.parametrize(
    ("name", "rdtype"), [("example.com", "A"), ("mxprobe.test.example", "MX"), (".", "NS")]
)
async def test_dns_refuses_names_outside_the_zones(
    name_server: DnsServer, name: str, rdtype: str
) -> None:
    """Names outside the world's zones get REFUSED, not authoritative."""
    response = await ask(name_server, name, rdtype)
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.AA


async def test_dns_over_tcp(name_server: DnsServer) -> None:
    """TCP queries (2-byte length prefix) get the same answers as UDP."""
    response = await ask(name_server, "strict.test", "MX", tcp=True)
    assert [rdata.to_text() for rdata in response.answer[0]] == ["10 mx.strict.test."]


async def test_dns_mx_answer_carries_exchange_addresses(name_server: DnsServer) -> None:
    """An MX answer lists the exchanges' A records in the additional section."""
    response = await ask(name_server, "failover.test", "MX")
    additional = {
        rrset.name.to_text(): [r.to_text() for r in rrset] for rrset in response.additional
    }
    assert additional == {
        "mx1.failover.test.": ["127.0.53.20"],
        "mx2.failover.test.": ["127.0.53.21"],
    }


async def test_dns_resolver_end_to_end(name_server: DnsServer) -> None:
    """dnspython's async resolver, pointed at the sandbox, resolves MX and reports NXDOMAIN."""
    sandbox_resolver = resolver(name_server.address, name_server.port)
    answer = await sandbox_resolver.resolve("strict.test", "MX")
    assert [(r.preference, r.exchange.to_text()) for r in answer] == [(10, "mx.strict.test.")]
    with pytest.raises(dns.resolver.NXDOMAIN):
        await sandbox_resolver.resolve("nosuchdomain.test", "MX")
    with pytest.raises(dns.resolver.NoAnswer):
        await sandbox_resolver.resolve("nomail.test", "MX")


async def test_dns_unsupported_edns_version(name_server: DnsServer) -> None:
    """EDNS versions above 0 get BADVERS (RFC 6891 §6.1.3)."""
    response = await ask(name_server, "strict.test", "MX", use_edns=1)
    assert response.rcode() == dns.rcode.BADVERS


async def test_dns_garbage_gets_formerr(name_server: DnsServer) -> None:
    """An unparsable query with a header gets FORMERR with its ID; the server keeps answering."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, (name_server.address, name_server.port))
        await loop.sock_sendall(sock, b"\x12\x34\x01\x00\x00\x01" + b"\xff" * 20)
        async with asyncio.timeout(2):
            wire = await loop.sock_recv(sock, 512)
    response = dns.message.from_wire(wire)
    assert response.id == 0x1234 and response.rcode() == dns.rcode.FORMERR
    assert (await ask(name_server, "strict.test", "MX")).rcode() == dns.rcode.NOERROR


async def test_dns_counts_queries(lab: Lab) -> None:
    """The sandbox counts queries per (name, type), lower case, without the final dot."""
    sandbox = await lab.start(World.from_dict({"domains": [{"name": "a.test", "a": [HOST]}]}))
    host, port = sandbox.dns_server.rsplit(":", 1)
    sandbox_resolver = resolver(host, int(port))
    for _ in range(2):
        await sandbox_resolver.resolve("A.test.", "A")
    with pytest.raises(dns.resolver.NXDOMAIN):
        await sandbox_resolver.resolve("b.test", "MX")
    assert sandbox.dns_queries() == {("a.test", "A"): 2, ("b.test", "MX"): 1}


@pytest.fixture
async def small_name_server() -> AsyncIterator[DnsServer]:
    """A name server with a silent name, a name with a large TXT set, and a deep host name."""
    world = World.from_dict(
        {
            "hosts": [{"name": "mx.deep.down.test", "address": HOST}],
            "domains": [
                {"name": "silent.test", "drop": True, "a": [HOST]},
                {"name": "big.test", "txt": [f"{i:03d} " + "x" * 96 for i in range(30)]},
            ],
        }
    )
    server = DnsServer(world)
    await server.start(0)
    yield server
    await server.stop()


async def test_dns_drop_never_answers(small_name_server: DnsServer) -> None:
    """A domain marked drop gets no answer at all: the client times out."""
    query = dns.message.make_query("silent.test", "A")
    with pytest.raises(dns.exception.Timeout):
        await dns.asyncquery.udp(
            query, small_name_server.address, port=small_name_server.port, timeout=0.3
        )
    assert small_name_server.queries[("silent.test", "A")] == 1


async def test_dns_truncates_large_udp_answers(small_name_server: DnsServer) -> None:
    """An answer larger than 512 octets (no EDNS) comes back empty with TC=1."""
    response = await ask(small_name_server, "big.test", "TXT")
    assert response.flags & dns.flags.TC
    assert response.answer == []


async def test_dns_respects_the_edns_payload(small_name_server: DnsServer) -> None:
    """With an EDNS payload of 4096 octets the same answer fits in one UDP message."""
    response = await ask(small_name_server, "big.test", "TXT", use_edns=0, payload=4096)
    assert not response.flags & dns.flags.TC
    assert len(response.answer[0]) == 30


async def test_dns_resolver_retries_truncated_answers_over_tcp(
    small_name_server: DnsServer,
) -> None:
    """dnspython's resolver gets the whole truncated answer by retrying over TCP."""
    answer = await resolver(small_name_server.address, small_name_server.port).resolve(
        "big.test", "TXT"
    )
    assert len(answer) == 30


async def test_dns_empty_non_terminal_is_nodata(small_name_server: DnsServer) -> None:
    """A name above an existing name exists (NODATA, RFC 8020), it is not NXDOMAIN."""
    response = await ask(small_name_server, "down.test", "A")
    assert response.rcode() == dns.rcode.NOERROR and response.answer == []


@functools.cache
def _default_authority() -> Authority:
    return Authority(load_world())


def _queries() -> st.SearchStrategy[bytes]:
    names = st.sampled_from(
        ["strict.test", "nosuchdomain.test", "servfail.test", "example.com", "test", "."]
    )
    types = st.sampled_from(["A", "AAAA", "MX", "TXT", "SOA", "NS", "ANY", "CNAME"])
    valid = st.builds(lambda n, t: dns.message.make_query(n, t).to_wire(), names, types)

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        wire = bytearray(draw(valid))
        for _ in range(draw(st.integers(1, 4))):
            wire[draw(st.integers(0, len(wire) - 1))] = draw(st.integers(0, 255))
        return bytes(wire[: draw(st.integers(0, len(wire)))])

    return st.binary(max_size=600) | mutated()


@given(wire=_queries())
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_dns_never_crashes_on_bad_input(wire: bytes) -> None:
    """Any bytes get a parsable response with the query's ID, or no response; never an exception."""
    answer = _default_authority().handle(wire, udp=True)
    if answer is not None:
        response = dns.message.from_wire(answer)
        assert response.id == int.from_bytes(wire[:2], "big")
        assert response.flags & dns.flags.QR
        assert len(answer) <= 512


# ---------------------------------------------------------------- SMTP: the protocol


async def test_banner_and_ehlo(lab: Lab) -> None:
    """The banner names the host; EHLO lists the extensions a verifier relies on."""
    sandbox = await lab.start(small_world())
    client = await lab.connect(sandbox)
    assert await client.reply() == ["220 mx.a.test ESMTP mxprobe-sandbox"]
    assert await client.send("EHLO probe.test") == [
        "250-mx.a.test",
        "250-SIZE 10240000",
        "250-ENHANCEDSTATUSCODES",
        "250-8BITMIME",
        "250 SMTPUTF8",
    ]


@pytest.mark.parametrize(
    ("commands", "last_reply"),
    [
        (["RCPT TO:<alice@a.test>"], "503 5.5.1 Error: need MAIL command"),
        (["MAIL FROM:<>", "MAIL FROM:<>"], "503 5.5.1 Error: nested MAIL command"),
        (["MAIL FROM:<> SIZE=1000 BODY=8BITMIME SMTPUTF8"], "250 2.1.0 Ok"),
        (["mail from: <Probe@Example.test>"], "250 2.1.0 Ok"),
        (["MAIL FROM:<> SIZE=99999999"], "552 5.3.4 Message size exceeds fixed limit"),
        (["MAIL FROM:<> AUTH=<>"], "555 5.5.4 Unsupported option: AUTH=<>"),
        (["MAIL FROM:probe@example.test"], "501 5.5.4 Syntax: MAIL FROM:<address>"),
        (["MAIL FROM:<>", "RCPT TO:<alice>"], "501 5.1.3 <alice>: Bad recipient address syntax"),
        (["MAIL FROM:<>", "RCPT TO:<postmaster>"], "250 2.1.5 Ok"),
        (
            ["MAIL FROM:<>", "RCPT TO:<alice@a.test> NOTIFY=NEVER"],
            "555 5.5.4 Unsupported option: NOTIFY=NEVER",
        ),
        (["MAIL FROM:<>", "RSET", "RCPT TO:<alice@a.test>"], "503 5.5.1 Error: need MAIL command"),
        (["VRFY alice"], "502 5.5.1 VRFY command is disabled"),
        (["EXPN staff"], "502 5.5.1 EXPN command is disabled"),
        (["NOOP"], "250 2.0.0 Ok"),
        (["HELP"], "500 5.5.2 Error: command not recognized"),
        (["EHLO"], "501 5.5.4 Syntax: EHLO hostname"),
        (["HELO probe.test"], "250 mx.a.test"),
        (["STARTTLS"], "502 5.5.1 Error: command not implemented"),
        (["x" * 1001], "500 5.5.2 Error: line too long"),
        (["x" * 1001, "NOOP"], "250 2.0.0 Ok"),
        ([b"\xff\xfe\x00 \xc3(", "NOOP"], "250 2.0.0 Ok"),
    ],
)
async def test_protocol_replies(lab: Lab, commands: list[str | bytes], last_reply: str) -> None:
    """Each command sequence after EHLO ends with the RFC 5321 reply a Postfix-like server gives."""
    sandbox = await lab.start(small_world())
    client = await lab.greeted(sandbox)
    replies = [await client.send(command) for command in commands]
    assert replies[-1] == [last_reply]


async def test_mail_before_ehlo_is_refused(lab: Lab) -> None:
    """MAIL before EHLO/HELO gets 503 5.5.1."""
    sandbox = await lab.start(small_world())
    client = await lab.connect(sandbox)
    await client.reply()
    assert await client.send("MAIL FROM:<>") == ["503 5.5.1 Error: send HELO/EHLO first"]


async def test_data_is_refused_and_counted(lab: Lab) -> None:
    """DATA gets 554 5.5.1 and is counted (a verifier must never send it)."""
    sandbox = await lab.start(small_world())
    client = await lab.greeted(sandbox)
    await client.send("MAIL FROM:<>")
    await client.send("RCPT TO:<alice@a.test>")
    [reply] = await client.send("DATA")
    assert reply.startswith("554 5.5.1 ")
    assert sandbox.stats("mx.a.test").data_commands == 1


async def test_quit_says_bye_and_closes(lab: Lab) -> None:
    """QUIT gets 221 2.0.0 Bye, then the server closes the connection."""
    sandbox = await lab.start(small_world())
    client = await lab.greeted(sandbox)
    assert await client.send("QUIT") == ["221 2.0.0 Bye"]
    assert await client.closed_by_server()


async def test_line_without_crlf_within_limit(lab: Lab) -> None:
    """1000 octets without CRLF get 500 5.5.2 at once, before the line ends."""
    sandbox = await lab.start(small_world())
    client = await lab.greeted(sandbox)
    client.writer.write(b"NOOP " + b"x" * 1200)
    assert await client.reply() == ["500 5.5.2 Error: line too long"]


async def test_idle_connection_is_closed(lab: Lab) -> None:
    """A client silent for idle_timeout gets 421 4.4.2 and is disconnected."""
    sandbox = await lab.start(small_world(smtp={"idle_timeout": 0.3}))
    client = await lab.connect(sandbox)
    await client.reply()
    assert await client.reply() == ["421 4.4.2 mx.a.test Error: timeout exceeded"]
    assert await client.closed_by_server()


async def test_starttls(lab: Lab) -> None:
    """STARTTLS upgrades with a self-signed certificate; EHLO then no longer offers it."""
    sandbox = await lab.start(small_world(starttls=True))
    client = await lab.smtp(sandbox, start_tls=True, validate_certs=False)
    assert client.get_transport_info("sslcontext") is not None
    await client.ehlo()
    assert not client.supports_extension("starttls")
    await client.mail("")
    assert await rcpt_reply(client, "alice@a.test") == (250, "2.1.5 Ok")
    assert sandbox.stats("mx.a.test").tls_sessions == 1


async def test_starttls_is_offered_only_when_configured(lab: Lab) -> None:
    """EHLO advertises STARTTLS for a starttls host, before the upgrade."""
    sandbox = await lab.start(small_world(starttls=True))
    client = await lab.connect(sandbox)
    await client.reply()
    assert "250-STARTTLS" in await client.send("EHLO probe.test")
    assert await client.send("STARTTLS now") == ["501 5.5.4 Syntax: STARTTLS"]


async def test_commands_after_starttls_need_ehlo_again(lab: Lab) -> None:
    """After the upgrade the session starts over: MAIL needs a new EHLO (RFC 3207 §4.2)."""
    sandbox = await lab.start(small_world(starttls=True))
    client = await lab.smtp(sandbox, start_tls=True, validate_certs=False)
    response = await client.execute_command(b"MAIL", b"FROM:<>")
    assert (response.code, response.message) == (503, "5.5.1 Error: send HELO/EHLO first")


_COMMANDS = st.sampled_from(
    [
        *(b"EHLO probe.test", b"HELO x", b"MAIL FROM:<>", b"MAIL FROM:<a@b.test> SIZE=5"),
        *(b"RCPT TO:<alice@a.test>", b"RCPT TO:<nobody@a.test>", b"DATA", b"NOOP", b"RSET"),
    ]
)
_LINES = _COMMANDS | st.binary(max_size=1100).map(lambda line: line.replace(b"\n", b""))


@given(lines=st.lists(_LINES, max_size=8))
@settings(max_examples=40, deadline=None)
def test_any_command_lines_get_well_formed_replies(lines: list[bytes]) -> None:
    """Whatever the client sends, every line gets one well-formed reply and the server lives on."""

    async def converse() -> None:
        async with Sandbox(small_world(), dns_port=0, smtp_port=0) as sandbox:
            reader, writer = await asyncio.open_connection(HOST, sandbox.smtp_port)
            try:
                client = Client(reader, writer)
                await client.reply()
                for line in lines:
                    reply = await client.send(line)
                    assert reply, f"no reply to {line!r}"
                    assert len({text[:3] for text in reply}) == 1 and reply[0][:3].isdigit()
                    assert all(text[3] == "-" for text in reply[:-1]) and reply[-1][3] == " "
                    if reply[-1].startswith("221 "):
                        return  # the random line was a QUIT
                assert await client.send("NOOP") == ["250 2.0.0 Ok"]
            finally:
                await _close(writer)

    asyncio.run(converse())


# ---------------------------------------------------------------- SMTP: behaviours

_USER_UNKNOWN = "5.1.1 <{}>: Recipient address rejected: User unknown in virtual mailbox table"


@pytest.mark.parametrize(
    ("behaviour", "recipient", "expected"),
    [
        ("strict", "alice@a.test", (250, "2.1.5 Ok")),
        ("strict", "ALICE@A.TEST", (250, "2.1.5 Ok")),
        ("strict", "bob@a.test", (250, "2.1.5 Ok")),
        ("strict", "nobody@a.test", (550, _USER_UNKNOWN.format("nobody@a.test"))),
        ("strict", "alice@closed.test", (554, "5.7.1 <alice@closed.test>: Relay access denied")),
        (
            "strict",
            "alice@elsewhere.test",
            (554, "5.7.1 <alice@elsewhere.test>: Relay access denied"),
        ),
        ("catch_all", "anyone@a.test", (250, "2.1.5 Ok")),
        ("catch_all", "alice@closed.test", (554, "5.7.1 <alice@closed.test>: Relay access denied")),
        (
            "policy_block",
            "alice@a.test",
            (
                554,
                "5.7.1 Service unavailable; Client host [127.0.0.1] blocked using "
                "zen.spamhaus.org; https://www.spamhaus.org/query/ip/127.0.0.1",
            ),
        ),
        (
            "cannot_verify",
            "nobody@a.test",
            (252, "2.1.5 Cannot VRFY user, but will accept message and attempt delivery"),
        ),
        ("null_sender_refused", "nobody@a.test", (550, _USER_UNKNOWN.format("nobody@a.test"))),
        ("tarpit", "alice@a.test", (250, "2.1.5 Ok")),
    ],
)
async def test_rcpt_reply_by_behaviour(
    lab: Lab, behaviour: str, recipient: str, expected: tuple[int, str]
) -> None:
    """Each behaviour answers RCPT TO as specified (aiosmtplib client, real sender)."""
    sandbox = await lab.start(small_world(behaviour))
    client = await lab.smtp(sandbox)
    await client.mail("probe@mxprobe.test")
    assert await rcpt_reply(client, recipient) == expected


async def test_implicit_mx_is_served(lab: Lab) -> None:
    """A domain without MX whose A record points at a host is served by that host."""
    world = World.from_dict(
        {
            "hosts": [{"name": "mx.a.test", "address": HOST}],
            "domains": [{"name": "implicit.test", "a": [HOST], "users": ["alice"]}],
        }
    )
    sandbox = await lab.start(world)
    client = await lab.smtp(sandbox)
    await client.mail("")
    assert await rcpt_reply(client, "alice@implicit.test") == (250, "2.1.5 Ok")


async def test_null_sender_refused(lab: Lab) -> None:
    """MAIL FROM:<> gets 550 5.7.1; a real sender gets 250."""
    sandbox = await lab.start(small_world("null_sender_refused"))
    client = await lab.greeted(sandbox)
    assert await client.send("MAIL FROM:<>") == [
        "550 5.7.1 <>: Sender address rejected: null sender not accepted here"
    ]
    assert await client.send("MAIL FROM:<probe@mxprobe.test>") == ["250 2.1.0 Ok"]
    assert sandbox.stats("mx.a.test").mail_from == ["", "probe@mxprobe.test"]


async def test_greylist_defers_then_passes(lab: Lab) -> None:
    """A new triplet gets 450 4.7.1 until greylist_delay has passed; then strict answers."""
    sandbox = await lab.start(small_world("greylist", greylist_delay=0.5))
    client = await lab.smtp(sandbox)
    await client.mail("probe@mxprobe.test")
    greylisted = (
        450,
        "4.7.1 <alice@a.test>: Recipient address rejected: Greylisted, see "
        "https://postgrey.schweikert.ch/help/a.test.html",
    )
    assert await rcpt_reply(client, "alice@a.test") == greylisted
    assert (await rcpt_reply(client, "nobody@a.test"))[0] == 450
    assert await rcpt_reply(client, "alice@a.test") == greylisted  # too early a retry
    await asyncio.sleep(0.6)
    assert await rcpt_reply(client, "alice@a.test") == (250, "2.1.5 Ok")
    assert await rcpt_reply(client, "nobody@a.test") == (550, _USER_UNKNOWN.format("nobody@a.test"))


async def test_greylist_is_per_triplet(lab: Lab) -> None:
    """A passed triplet does not let the same recipient through with another sender."""
    sandbox = await lab.start(small_world("greylist", greylist_delay=0.3))
    client = await lab.smtp(sandbox)
    await client.mail("first@mxprobe.test")
    await rcpt_reply(client, "alice@a.test")
    await asyncio.sleep(0.4)
    assert (await rcpt_reply(client, "alice@a.test"))[0] == 250
    await client.rset()
    await client.mail("second@mxprobe.test")
    assert (await rcpt_reply(client, "alice@a.test"))[0] == 450


async def test_rate_limit_connections(lab: Lab) -> None:
    """Connections beyond max_connections in the window get 421 4.7.0 and are closed."""
    sandbox = await lab.start(small_world("rate_limit", max_connections=2, window=60.0))
    accepted = [await lab.connect(sandbox) for _ in range(2)]
    for client in accepted:
        assert await client.reply() == ["220 mx.a.test ESMTP mxprobe-sandbox"]
    refused = await lab.connect(sandbox)
    assert await refused.reply() == [
        "421 4.7.0 mx.a.test Too many connections from 127.0.0.1, try again later"
    ]
    assert await refused.closed_by_server()
    stats = sandbox.stats("mx.a.test")
    assert (stats.connections, stats.max_concurrent) == (3, 3)


async def test_rate_limit_window_slides(lab: Lab) -> None:
    """Once the window has passed, the client may connect again."""
    sandbox = await lab.start(small_world("rate_limit", max_connections=1, window=0.5))
    assert (await (await lab.connect(sandbox)).reply())[0].startswith("220 ")
    assert (await (await lab.connect(sandbox)).reply())[0].startswith("421 ")
    await asyncio.sleep(0.55)
    assert (await (await lab.connect(sandbox)).reply())[0].startswith("220 ")


async def test_rate_limit_recipients(lab: Lab) -> None:
    """The RCPT beyond max_rcpt gets 421 4.7.0 and the connection is closed (RFC 5321 §3.8)."""
    sandbox = await lab.start(small_world("rate_limit", max_rcpt=2, window=60.0))
    client = await lab.greeted(sandbox)
    await client.send("MAIL FROM:<>")
    assert await client.send("RCPT TO:<alice@a.test>") == ["250 2.1.5 Ok"]
    assert (await client.send("RCPT TO:<nobody@a.test>"))[0].startswith("550 ")
    assert await client.send("RCPT TO:<bob@a.test>") == [
        "421 4.7.0 Too many recipients from 127.0.0.1, slow down"
    ]
    assert await client.closed_by_server()
    assert sandbox.stats("mx.a.test").rcpts == 3


async def test_tarpit_delays(lab: Lab) -> None:
    """The banner waits banner_delay and every reply waits reply_delay."""
    sandbox = await lab.start(small_world("tarpit", banner_delay=0.5, reply_delay=0.2))
    started = time.monotonic()
    client = await lab.connect(sandbox)
    await client.reply()
    assert time.monotonic() - started >= 0.45
    started = time.monotonic()
    await client.send("NOOP")
    assert time.monotonic() - started >= 0.18


async def test_disconnect_after_rcpt(lab: Lab) -> None:
    """The first RCPT is answered as strict; the next command gets no reply, only a close."""
    sandbox = await lab.start(small_world("disconnect_after_rcpt"))
    client = await lab.greeted(sandbox)
    await client.send("MAIL FROM:<>")
    assert await client.send("RCPT TO:<alice@a.test>") == ["250 2.1.5 Ok"]
    assert await client.send("RCPT TO:<bob@a.test>") == []
    assert await client.closed_by_server()


async def test_multiline_replies(lab: Lab) -> None:
    """Banner, EHLO and RCPT replies span several lines, Gmail style."""
    sandbox = await lab.start(small_world("multiline"))
    client = await lab.connect(sandbox)
    banner = await client.reply()
    assert len(banner) > 1 and banner[0].startswith("220-") and banner[-1].startswith("220 ")
    assert (await client.send("EHLO probe.test"))[0] == "250-mx.a.test at your service, [127.0.0.1]"
    await client.send("MAIL FROM:<>")
    assert await client.send("RCPT TO:<nobody@a.test>") == [
        "550-5.1.1 The email account that you tried to reach does not exist. Please try",
        "550-5.1.1 double-checking the recipient's email address for typos or",
        "550 5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser",
    ]
    accepted = await client.send("RCPT TO:<alice@a.test>")
    assert accepted[0] == "250-2.1.5 OK" and accepted[-1].startswith("250 2.1.5 ")


async def test_multiline_through_aiosmtplib(lab: Lab) -> None:
    """aiosmtplib joins a multi-line 550 into one message with the enhanced code on each line."""
    sandbox = await lab.start(small_world("multiline"))
    client = await lab.smtp(sandbox)
    await client.mail("")
    code, message = await rcpt_reply(client, "nobody@a.test")
    assert code == 550 and message.count("5.1.1") == 3


@pytest.mark.parametrize("world_host", [{"behaviour": "down"}, {"listen": False}])
async def test_down_host_refuses_connections(lab: Lab, world_host: dict[str, Any]) -> None:
    """Nothing listens on a down host's address: the connection is refused."""
    sandbox = await lab.start(
        World.from_dict(
            {
                "hosts": [
                    {"name": "mx.a.test", "address": HOST, **world_host},
                    {"name": "mx.b.test", "address": OTHER_HOST},
                ]
            }
        )
    )
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(HOST, sandbox.smtp_port)
    assert (await (await lab.connect(sandbox, OTHER_HOST)).reply())[0].startswith("220 ")


async def test_stats_count_a_session(lab: Lab) -> None:
    """Connections, sessions, RCPTs, senders, client addresses and RSETs are counted."""
    sandbox = await lab.start(small_world())
    client = await lab.greeted(sandbox)
    await client.send("EHLO again.test")  # the same session
    await client.send("MAIL FROM:<probe@mxprobe.test>")
    await client.send("RCPT TO:<alice@a.test>")
    await client.send("RCPT TO:<nobody@a.test>")
    await client.send("RSET")
    await (await lab.connect(sandbox)).reply()  # a connection without a session
    stats = sandbox.stats("mx.a.test")
    assert (stats.connections, stats.sessions, stats.rcpts, stats.rset) == (2, 1, 2, 1)
    assert stats.mail_from == ["probe@mxprobe.test"]
    assert stats.client_ips == {"127.0.0.1"}
    assert stats.max_concurrent == 2


async def test_stats_reset(lab: Lab) -> None:
    """reset() zeroes the counters but keeps open connections counted as open."""
    sandbox = await lab.start(small_world())
    await lab.greeted(sandbox)
    stats = sandbox.stats("mx.a.test")
    stats.reset()
    assert (stats.connections, stats.sessions, stats.mail_from, stats.client_ips) == (
        0,
        0,
        [],
        set(),
    )
    assert stats.open_connections == stats.max_concurrent == 1


async def test_mail_from_keeps_the_last_100(lab: Lab) -> None:
    """Only the newest 100 senders are kept."""
    sandbox = await lab.start(small_world())
    client = await lab.greeted(sandbox)
    for i in range(105):
        await client.send(f"MAIL FROM:<s{i}@mxprobe.test>")
        await client.send("RSET")
    senders = sandbox.stats("mx.a.test").mail_from
    assert (
        len(senders) == 100
        and senders[0] == "s5@mxprobe.test"
        and senders[-1] == "s104@mxprobe.test"
    )


# ---------------------------------------------------------------- the runner


async def test_free_ports_are_chosen(lab: Lab) -> None:
    """Port 0 picks free ports; dns_server names the address and the chosen port."""
    sandbox = await lab.start(small_world())
    assert sandbox.dns_port > 0 and sandbox.smtp_port > 0
    assert sandbox.dns_server == f"127.0.53.53:{sandbox.dns_port}"


async def test_smtp_port_without_listening_hosts(lab: Lab) -> None:
    """With no host listening, port 0 still yields a real port, on which connections are refused."""
    world = World.from_dict(
        {"hosts": [{"name": "mx.a.test", "address": HOST, "behaviour": "down"}]}
    )
    sandbox = await lab.start(world)
    assert sandbox.smtp_port > 0
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(HOST, sandbox.smtp_port)


async def test_ports_from_the_world_by_default() -> None:
    """Without port arguments the world's ports are used."""
    sandbox = Sandbox(load_world())
    assert (sandbox.dns_port, sandbox.smtp_port) == (10053, 10025)
    assert sandbox.dns_server == "127.0.53.53:10053"


async def test_smtp_port_in_use(lab: Lab) -> None:
    """A taken SMTP port raises SandboxError naming address:port and the option to change it."""
    first = await lab.start(small_world())
    second = Sandbox(small_world(), dns_port=0, smtp_port=first.smtp_port)
    with pytest.raises(
        SandboxError, match=rf"SMTP on {HOST}:{first.smtp_port}: .*already in use.*--smtp-port"
    ):
        await second.start()
    await second.stop()


async def test_dns_port_in_use(lab: Lab) -> None:
    """A taken DNS port raises SandboxError naming address:port and --dns-port."""
    first = await lab.start(small_world())
    second = Sandbox(small_world(), dns_port=first.dns_port, smtp_port=0)
    with pytest.raises(
        SandboxError, match=rf"127\.0\.53\.53:{first.dns_port}: .*already in use.*--dns-port"
    ):
        await second.start()


@pytest.mark.parametrize("ports", [{"dns_port": -1}, {"smtp_port": 65536}])
def test_invalid_port_is_refused(ports: dict[str, int]) -> None:
    """A port outside 0..65535 raises SandboxError naming the option."""
    with pytest.raises(SandboxError, match=r"0\.\.65535"):
        Sandbox(load_world(), **ports)


async def test_start_twice_is_refused(lab: Lab) -> None:
    """A running sandbox cannot be started again."""
    sandbox = await lab.start(small_world())
    with pytest.raises(SandboxError, match="already running"):
        await sandbox.start()


async def test_stop_closes_open_connections(lab: Lab) -> None:
    """stop() closes client connections and stops listening; calling it twice is harmless."""
    sandbox = await lab.start(small_world("tarpit", banner_delay=30.0))
    client = await lab.connect(sandbox)  # waiting for a 30 s banner
    await asyncio.sleep(0.05)
    port = sandbox.smtp_port
    await sandbox.stop()
    assert await client.closed_by_server()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(HOST, port)
    await sandbox.stop()


async def test_stats_of_an_unknown_host(lab: Lab) -> None:
    """stats() of a host the world does not define raises KeyError naming the hosts."""
    sandbox = await lab.start(small_world())
    with pytest.raises(KeyError, match=r"mx\.a\.test"):
        sandbox.stats("mx.nowhere.test")


async def test_reset_stats(lab: Lab) -> None:
    """reset_stats() zeroes every host's counters and the DNS query counts."""
    sandbox = await lab.start(small_world())
    await lab.greeted(sandbox)
    await resolver("127.0.53.53", sandbox.dns_port).resolve("a.test", "MX")
    sandbox.reset_stats()
    assert sandbox.stats("mx.a.test").connections == 0
    assert sandbox.dns_queries() == {}


async def test_default_world_runs(lab: Lab) -> None:
    """The packaged world starts: MX resolve, live hosts greet, down hosts refuse, TLS works."""
    sandbox = await lab.start(load_world())
    world = sandbox.world
    answer = await resolver(world.dns.address, sandbox.dns_port).resolve("failover.test", "MX")
    assert sorted(r.exchange.to_text() for r in answer) == [
        "mx1.failover.test.",
        "mx2.failover.test.",
    ]
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(world.host("mx1.failover.test").address, sandbox.smtp_port)
    greeting = await (await lab.connect(sandbox, world.host("mx2.failover.test").address)).reply()
    assert greeting == ["220 mx2.failover.test ESMTP mxprobe-sandbox"]
    client = await lab.smtp(
        sandbox, world.host("mx.tls.test").address, start_tls=True, validate_certs=False
    )
    await client.mail(world.probe.mail_from)
    assert (await rcpt_reply(client, "alice@tls.test"))[0] == 250
    assert sandbox.stats("mx.tls.test").tls_sessions == 1
