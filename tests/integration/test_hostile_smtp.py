"""Hostile SMTP peers: each ends soon, as ``unknown`` with a precise reason.

The sandbox's packaged ``hostile`` world plays each behaviour on loopback; the
verifier is built from settings as ``mxprobe check`` builds it, with a 1 s
timeout. For every host: the verdict the world expects, a detail saying what
the host did, a time bound (three timeouts and a second: a correctness bound,
not a benchmark) and a memory bound (tracemalloc's peak over the whole
process, the sandbox's thread included). The raw tests at the end check that
the sandbox really sends what each behaviour promises, byte for byte.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass

import aiosmtplib
import pytest
from support import SandboxThread, mxprobe

from streams.adapters.session_pool import IdleSessions, Session, unread_bytes
from streams.adapters.smtp_probe import QUOTE_LIMIT
from streams.assembly import build_verifier
from streams.core.route import Target
from streams.core.verdict import REPLY_TEXT_LIMIT, Verdict
from streams.render import verdict_json
from streams.sandbox import Behaviour, load_world
from streams.sandbox.behaviours import LONG_LINE_SIZE

pytestmark = pytest.mark.integration

HOSTILE = load_world("hostile")
EXPECTED = {e.address: f"{e.status}/{e.reason}" for e in HOSTILE.expectations}
TIMEOUT = 1.0
TIME_BOUND = 3 * TIMEOUT + 1.0  # seconds
MEMORY_BOUND = 5 * 1024 * 1024  # bytes: a 1 MiB line or an endless reply is never kept whole
# A detail: the rule's sentence and one about the host, quoting at most QUOTE_LIMIT characters.
DETAIL_BOUND = 200 + QUOTE_LIMIT


@dataclass(frozen=True)
class Case:
    """One hostile address and what its verdict's detail must say the host did."""

    address: str
    says: tuple[str, ...]
    broken: bool = True  # the session broke: closed without QUIT, never parked

    @property
    def host(self) -> str:
        return "mx." + self.address.partition("@")[2]


CASES = (
    Case("alice@endless.test", ("mx.endless.test", "reply to EHLO", "longer than SMTP allows")),
    Case("alice@longline.test", ("mx.longline.test", "reply to RCPT", "longer than SMTP allows")),
    Case("alice@garbage.test", ("reply to RCPT", "does not start with a reply code")),
    Case("alice@drip.test", ("mx.drip.test", "did not complete its reply to EHLO", "1 s")),
    Case("alice@hangup.test", ("mx.hangup.test", "closed the connection", "reply to RCPT")),
    Case("alice@early.test", ("mx.early.test", "bytes beyond its greeting", "RFC 5321 §4.2")),
    Case("alice@silent.test", ("No greeting from mx.silent.test", "within 1 s")),
    Case("alice@badbytes.test", (), broken=False),
    Case("nobody@badbytes.test", (), broken=False),
)


@dataclass(frozen=True)
class Probed:
    """A verdict and what it cost."""

    verdict: Verdict
    seconds: float
    peak_bytes: int
    quits: int  # QUIT commands the host received, parked sessions' included


@pytest.fixture(scope="module")
def hostile_sb() -> Iterator[SandboxThread]:
    with SandboxThread(HOSTILE) as sb:
        yield sb


async def probe(sb: SandboxThread, address: str, host: str) -> Probed:
    """Verify ``address`` alone with a fresh verifier; time and memory of the verification."""
    stats = sb.sandbox.stats(host)
    sb.call(stats.reset)
    verifier = build_verifier(sb.settings(timeout=TIMEOUT))
    tracemalloc.start()
    try:
        started = time.monotonic()
        [verdict] = await verifier.verify_many([address])
        seconds = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        await verifier.aclose()  # QUITs whatever was parked
    return Probed(verdict, seconds, peak, sb.call(lambda: stats.quits))


@pytest.fixture(scope="module")
def probed(hostile_sb: SandboxThread) -> dict[str, Probed]:
    """Every hostile address verified on its own, one after the other."""

    async def run_all() -> dict[str, Probed]:
        return {c.address: await probe(hostile_sb, c.address, c.host) for c in CASES}

    return asyncio.run(run_all())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.address)
def test_verdict_is_the_expected_one(probed: dict[str, Probed], case: Case) -> None:
    """Each hostile host gives the verdict the hostile world expects."""
    verdict = probed[case.address].verdict
    assert f"{verdict.status.value}/{verdict.reason.value}" == EXPECTED[case.address], (
        verdict.detail
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.address)
def test_detail_says_what_the_host_did(probed: dict[str, Probed], case: Case) -> None:
    """The detail names the host's misdeed in one bounded sentence, free of control bytes."""
    detail = probed[case.address].verdict.detail
    for words in case.says:
        assert words in detail
    assert len(detail) <= DETAIL_BOUND
    assert not any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in detail)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.address)
def test_ends_within_three_timeouts(probed: dict[str, Probed], case: Case) -> None:
    """Each verification ends within three probe timeouts and a second."""
    assert probed[case.address].seconds < TIME_BOUND


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.address)
def test_memory_stays_bounded(probed: dict[str, Probed], case: Case) -> None:
    """No reply is kept whole: the process's peak stays far below the 1 MiB line it is sent."""
    assert probed[case.address].peak_bytes < MEMORY_BOUND


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.address)
def test_broken_sessions_are_closed_without_quit(probed: dict[str, Probed], case: Case) -> None:
    """A session that broke is closed without QUIT and never parked; a sound one is QUIT."""
    quits = probed[case.address].quits
    assert (quits == 0) if case.broken else (quits >= 1)


@pytest.mark.parametrize("address", ["alice@badbytes.test", "nobody@badbytes.test"])
def test_bytes_that_are_not_utf8_become_replacement_characters(
    probed: dict[str, Probed], address: str
) -> None:
    """Bytes that are not UTF-8 in a reply text are read as U+FFFD, so the verdict encodes."""
    verdict = probed[address].verdict
    text = verdict.evidence.reply_text or ""
    assert "\ufffd" in text
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    assert len(text) <= REPLY_TEXT_LIMIT
    verdict_json(verdict).encode("utf-8")  # lone surrogates would raise here


async def test_whole_hostile_world_in_one_batch(hostile_sb: SandboxThread) -> None:
    """Every hostile address in one batch: each expected verdict, all within the time bound."""
    verifier = build_verifier(hostile_sb.settings(timeout=TIMEOUT))
    try:
        started = time.monotonic()
        verdicts = await verifier.verify_many(list(EXPECTED))
        seconds = time.monotonic() - started
    finally:
        await verifier.aclose()
    got = {v.email: f"{v.status.value}/{v.reason.value}" for v in verdicts}
    assert got == EXPECTED
    assert seconds < TIME_BOUND


def test_the_world_plays_every_hostile_behaviour() -> None:
    """The hostile world has one host per hostile behaviour of the issue, all expected here."""
    hostile = {
        Behaviour.ENDLESS_REPLY,
        Behaviour.LONG_LINE,
        Behaviour.BAD_BYTES,
        Behaviour.GARBAGE,
        Behaviour.DRIP,
        Behaviour.CLOSE_MID_REPLY,
        Behaviour.EARLY_REPLY,
        Behaviour.SILENT,
    }
    assert {h.behaviour for h in HOSTILE.hosts} == hostile
    assert {c.address for c in CASES} == set(EXPECTED)


# ---------------------------------------------------------------- the session pool


@pytest.mark.parametrize(("host", "parks"), [("mx.early.test", False), ("mx.badbytes.test", True)])
async def test_pool_parks_only_sessions_with_nothing_unread(
    hostile_sb: SandboxThread, host: str, parks: bool
) -> None:
    """A session holding bytes beyond its last reply (a reply ahead) is never parked."""
    target = Target(host, HOSTILE.host(host).address)
    smtp = aiosmtplib.SMTP(
        hostname=target.address, port=hostile_sb.sandbox.smtp_port, timeout=TIMEOUT, start_tls=False
    )
    await smtp.connect()
    pool = IdleSessions(5.0, quit_timeout=TIMEOUT)
    try:
        assert (unread_bytes(smtp) == 0) is parks
        assert pool.park(Session(smtp, target)) is parks
    finally:
        await pool.aclose()
        smtp.close()


async def test_pool_never_parks_a_closed_session(hostile_sb: SandboxThread) -> None:
    """A session whose connection is closed is refused by the pool."""
    target = Target("mx.badbytes.test", HOSTILE.host("mx.badbytes.test").address)
    smtp = aiosmtplib.SMTP(
        hostname=target.address, port=hostile_sb.sandbox.smtp_port, timeout=TIMEOUT, start_tls=False
    )
    await smtp.connect()
    smtp.close()
    pool = IdleSessions(5.0, quit_timeout=TIMEOUT)
    assert pool.park(Session(smtp, target)) is False
    await pool.aclose()


# ---------------------------------------------------------------- the sandbox, raw


class Raw:
    """A plain TCP client of one hostile host, speaking SMTP by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, sb: SandboxThread, host: str) -> Raw:
        address = HOSTILE.host(host).address
        reader, writer = await asyncio.open_connection(address, sb.sandbox.smtp_port)
        return cls(reader, writer)

    async def reply(self) -> bytes:
        """One whole reply (lines until one whose fourth byte is a space)."""
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), 5)
            lines.append(line)
            if line[3:4] == b" ":
                return b"".join(lines)

    async def send(self, command: str) -> None:
        self.writer.write(command.encode() + b"\r\n")
        await self.writer.drain()

    async def up_to_rcpt(self) -> None:
        """Banner, EHLO and MAIL, each answered; then send RCPT."""
        for command in ("EHLO probe.test", "MAIL FROM:<>"):
            await self.reply()
            await self.send(command)
        await self.reply()
        await self.send(f"RCPT TO:<alice@{self.domain()}>")

    def domain(self) -> str:
        address = self.writer.get_extra_info("peername")[0]
        host = next(h for h in HOSTILE.hosts if h.address == address)
        return host.name.removeprefix("mx.")

    async def read_for(
        self, seconds: float, *, limit: int = 8 * 1024 * 1024, until: bytes | None = None
    ) -> bytes:
        """What arrives within ``seconds``: up to ``limit`` bytes, EOF, or ending in ``until``."""
        data = bytearray()
        deadline = time.monotonic() + seconds
        while len(data) < limit and not (until and data.endswith(until)):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), left)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
        return bytes(data)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_silent_host_sends_nothing(hostile_sb: SandboxThread) -> None:
    """The silent host accepts the connection and says nothing at all."""
    raw = await Raw.open(hostile_sb, "mx.silent.test")
    assert await raw.read_for(0.5) == b""
    await raw.close()


async def test_early_host_sends_two_replies_at_once(hostile_sb: SandboxThread) -> None:
    """The early host's first write holds the banner and an extra 250 nobody asked for."""
    raw = await Raw.open(hostile_sb, "mx.early.test")
    first = await asyncio.wait_for(raw.reader.read(65536), 5)
    lines = first.split(b"\r\n")
    assert lines[0].startswith(b"220 ") and lines[1].startswith(b"250 ")
    await raw.close()


async def test_endless_host_never_ends_its_ehlo_reply(hostile_sb: SandboxThread) -> None:
    """The endless host answers EHLO with far more than 32 KiB of 250- lines and no last line."""
    raw = await Raw.open(hostile_sb, "mx.endless.test")
    await raw.reply()
    await raw.send("EHLO probe.test")
    data = await raw.read_for(3.0, limit=2 * 1024 * 1024)
    lines = data.split(b"\r\n")[:-1]  # the last piece may be cut mid-line
    assert len(data) >= 2 * 1024 * 1024
    assert all(line.startswith(b"250-") for line in lines)
    await raw.close()


async def test_long_line_host_sends_a_mebibyte_before_crlf(hostile_sb: SandboxThread) -> None:
    """The long-line host answers RCPT with one line of more than 1 MiB."""
    raw = await Raw.open(hostile_sb, "mx.longline.test")
    await raw.up_to_rcpt()
    data = await raw.read_for(5.0, until=b"\r\n")
    assert b"\n" not in data[:LONG_LINE_SIZE]
    assert data.endswith(b"\r\n") and len(data) > LONG_LINE_SIZE
    await raw.close()


async def test_garbage_host_sends_no_reply_code(hostile_sb: SandboxThread) -> None:
    """The garbage host answers RCPT with bytes that are neither a code nor UTF-8."""
    raw = await Raw.open(hostile_sb, "mx.garbage.test")
    await raw.up_to_rcpt()
    line = await asyncio.wait_for(raw.reader.readuntil(b"\r\n"), 5)
    assert not line[:3].isdigit()
    with pytest.raises(UnicodeDecodeError):
        line.decode("utf-8")
    await raw.close()


async def test_hangup_host_closes_after_one_continuation_line(hostile_sb: SandboxThread) -> None:
    """The hangup host sends the first line of a multi-line RCPT reply, then closes."""
    raw = await Raw.open(hostile_sb, "mx.hangup.test")
    await raw.up_to_rcpt()
    data = await raw.read_for(3.0)
    assert data.startswith(b"250-") and data.count(b"\r\n") == 1 and data.endswith(b"\r\n")
    assert raw.reader.at_eof()
    await raw.close()


async def test_drip_host_trickles_its_replies(hostile_sb: SandboxThread) -> None:
    """The drip host sends its EHLO reply a byte a second: 1.5 s bring one or two bytes."""
    raw = await Raw.open(hostile_sb, "mx.drip.test")
    await raw.reply()
    await raw.send("EHLO probe.test")
    data = await raw.read_for(1.5)
    assert data.startswith(b"2") and 1 <= len(data) <= 2
    await raw.close()


async def test_bad_bytes_host_banner_is_not_utf8(hostile_sb: SandboxThread) -> None:
    """The bad-bytes host's banner is a valid 220 reply whose text is not UTF-8."""
    raw = await Raw.open(hostile_sb, "mx.badbytes.test")
    banner = await raw.reply()
    assert banner.startswith(b"220 ")
    with pytest.raises(UnicodeDecodeError):
        banner.decode("utf-8")
    await raw.close()


# ---------------------------------------------------------------- as a user runs it


def test_sandbox_demo_of_the_hostile_world() -> None:
    """`mxprobe sandbox --world hostile --demo` meets every expectation of the hostile world."""
    result = mxprobe(
        *("sandbox", "--world", "hostile", "--demo", "--dns-port", "0", "--smtp-port", "0"),
        *("--timeout", f"{TIMEOUT:g}"),
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    count = len(HOSTILE.expectations)
    assert f"{count} of {count} verdicts as expected" in result.stdout
