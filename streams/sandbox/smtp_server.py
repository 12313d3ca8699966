"""A hand-written asyncio SMTP server for one sandbox mail host.

It speaks enough of RFC 5321 for a verifier - EHLO/HELO, MAIL FROM, RCPT TO,
RSET, NOOP, QUIT, STARTTLS (RFC 3207) - and refuses DATA (counting it: a
verifier must never send it). What the host answers is decided by
:class:`~streams.sandbox.behaviours.HostPolicy`; this module parses lines,
keeps the session state and does the I/O. It is hand-written rather than
built on aiosmtpd so hostile behaviours (dripping replies, endless
multi-line replies, no banner) can be played at the byte level: the policy
returns a :data:`~streams.sandbox.behaviours.Misbehaviour` and
:meth:`SmtpHostServer._misbehave` sends it.

Robustness: lines are read with a 1000-octet limit (RFC 5321 §4.5.3.1.4),
bytes are decoded as UTF-8 with ``surrogateescape`` (bad bytes never crash),
and a connection idle for ``idle_timeout`` gets 421 and is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from streams.sandbox.behaviours import (
    MAX_MESSAGE_SIZE,
    HostPolicy,
    Misbehaviour,
    Reply,
    Silence,
    Trickle,
)
from streams.sandbox.connections import ConnectionTasks
from streams.sandbox.stats import HostStats
from streams.sandbox.world import World
from streams.sandbox.world_parts import Behaviour, Host

__all__ = ["MAX_LINE", "SmtpHostServer"]

#: The longest command line accepted, CRLF included (RFC 5321 §4.5.3.1.4-6).
MAX_LINE = 1000

_PATH = re.compile(r"^(?P<kw>FROM|TO):\s*<(?P<addr>[^<>]*)>(?P<params>.*)$", re.IGNORECASE)
_MAIL_PARAMS = frozenset({"SIZE", "BODY", "SMTPUTF8"})
_BODIES = frozenset({"7BIT", "8BITMIME"})

_TOO_LONG = Reply.of(500, "5.5.2 Error: line too long")
_UNKNOWN = Reply.of(500, "5.5.2 Error: command not recognized")
_OK = Reply.of(250, "2.0.0 Ok")


class _LineTooLong:
    """Marker: a line exceeded :data:`MAX_LINE` octets."""


class _LineReader:
    """Reads CRLF-terminated lines (a bare LF is tolerated) of at most ``MAX_LINE`` octets."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buffer = bytearray()
        self._skipping = False  # inside the rest of an over-long line

    def discard_buffer(self) -> None:
        """Forget unread bytes: after STARTTLS, plaintext sent early is untrusted (RFC 3207 §4)."""
        self._buffer.clear()

    async def readline(self) -> bytes | _LineTooLong | None:
        """The next line without its line ending, a too-long marker, or None at EOF."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                if self._skipping:
                    self._skipping = False
                    continue
                if len(line) > MAX_LINE:
                    return _LineTooLong()
                return line.rstrip(b"\r\n")
            if len(self._buffer) > MAX_LINE:
                self._buffer.clear()
                if not self._skipping:
                    self._skipping = True
                    return _LineTooLong()
            chunk = await self._reader.read(4096)
            if not chunk:
                return None
            self._buffer += chunk


@dataclass(slots=True)
class _Session:
    """The state of one SMTP connection (RFC 5321 §4.1.4 command order)."""

    client_ip: str
    greeted: bool = False
    counted: bool = False  # counted in HostStats.sessions
    sender: str | None = None  # set by MAIL FROM: a transaction is open
    tls: bool = False
    hang_up: bool = False  # disconnect_after_rcpt: close on the next command
    upgrade: bool = False  # STARTTLS was accepted: start the handshake after the reply

    def reset_transaction(self) -> None:
        self.sender = None


class SmtpHostServer:
    """The SMTP server of one sandbox host, on ``host.address``.

    Args:
        host: the host to serve (its behaviour and parameters).
        world: the world, for the domains the host serves.
        tls: the server TLS context when the host offers STARTTLS, else None.
        idle_timeout: seconds to wait for a command (or a write) before 421 and close.
        clock: a monotonic clock in seconds.
        sleep: waits a number of seconds (tarpit delays).
        stats: the counters to update (a new :class:`HostStats` when None).
    """

    def __init__(
        self,
        host: Host,
        world: World,
        *,
        tls: ssl.SSLContext | None,
        idle_timeout: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        stats: HostStats | None = None,
    ) -> None:
        self.host = host
        self.stats = HostStats() if stats is None else stats
        self._policy = HostPolicy(host, world, clock=clock)
        self._clock = clock
        self._tls = tls if host.starttls else None
        self._idle = idle_timeout
        self._sleep = sleep
        self._server: asyncio.Server | None = None
        self._connections = ConnectionTasks(self._serve, name=host.name)
        self._commands: dict[str, Callable[[_Session, str], Reply]] = {
            "EHLO": self._ehlo,
            "HELO": self._helo,
            "MAIL": self._mail,
            "RCPT": self._rcpt,
            "DATA": self._data,
            "RSET": self._rset,
            "NOOP": self._noop,
            "QUIT": self._quit,
            "VRFY": self._vrfy,  # RFC 5321 §3.5.3: may be disabled
            "EXPN": self._expn,
            "STARTTLS": self._starttls,
        }

    @property
    def port(self) -> int:
        """The port listened on (0 before :meth:`start`)."""
        if self._server is None or not self._server.sockets:
            return 0
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, port: int) -> None:
        """Listen on ``host.address:port`` (0 picks a free port).

        Raises:
            OSError: the address or port cannot be bound.
        """
        self._server = await asyncio.start_server(
            self._connections.accept, host=self.host.address, port=port, reuse_address=True
        )

    async def stop(self) -> None:
        """Stop listening and close every open connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self._connections.stop_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        session = _Session(client_ip=str(peer[0]) if peer else "unknown")
        self.stats.connection_opened(session.client_ip, self._clock())
        try:
            await self._converse(session, _LineReader(reader), writer)
        finally:
            self.stats.connection_closed()

    async def _converse(
        self, session: _Session, lines: _LineReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.host.banner_delay:
            await self._sleep(self.host.banner_delay)
        banner = self._policy.banner(session.client_ip)
        misbehaviour = self._policy.greeting_misbehaviour(banner)
        if misbehaviour is not None:
            if not await self._misbehave(lines, writer, misbehaviour):
                return
        elif not await self._send(writer, banner, delay=False) or banner.close:
            return
        while True:
            try:
                async with asyncio.timeout(self._idle):
                    line = await lines.readline()
            except TimeoutError:
                text = f"4.4.2 {self.host.name} Error: timeout exceeded"
                await self._send(writer, Reply.of(421, text, close=True), delay=False)
                return
            if line is None or session.hang_up:
                return  # EOF, or disconnect_after_rcpt hangs up without a reply
            verb, reply = (
                ("", _TOO_LONG) if isinstance(line, _LineTooLong) else self._dispatch(session, line)
            )
            misbehaviour = self._policy.reply_misbehaviour(verb, reply)
            if misbehaviour is not None:
                if not await self._misbehave(lines, writer, misbehaviour):
                    return
                continue
            if not await self._send(writer, reply) or reply.close:
                return
            if session.upgrade and not await self._start_tls(session, lines, writer):
                return

    async def _send(
        self, writer: asyncio.StreamWriter, reply: Reply, *, delay: bool = True
    ) -> bool:
        """Send ``reply`` (after the tarpit delay); False when the peer is gone or stalls."""
        if delay and self.host.reply_delay:
            await self._sleep(self.host.reply_delay)
        try:
            writer.write(reply.encode())
            if reply.code == 421:
                self.stats.replies_421 += 1
            async with asyncio.timeout(self._idle):
                await writer.drain()
        except (OSError, TimeoutError):
            return False
        return True

    async def _misbehave(
        self, lines: _LineReader, writer: asyncio.StreamWriter, misbehaviour: Misbehaviour
    ) -> bool:
        """Send what a hostile host sends instead of a reply; False when the session is over."""
        if isinstance(misbehaviour, Silence):
            await self._stay_silent(lines)
            return False
        try:
            if isinstance(misbehaviour, Trickle):
                await self._trickle(writer, misbehaviour)
                return not misbehaviour.close
            for chunk in misbehaviour.chunks():
                writer.write(chunk)
                async with asyncio.timeout(self._idle):
                    await writer.drain()  # a client that stops reading stalls us here
        except (OSError, TimeoutError):
            return False
        return not misbehaviour.close

    async def _trickle(self, writer: asyncio.StreamWriter, trickle: Trickle) -> None:
        """Send ``trickle.data`` one byte at a time; stops when the client has left."""
        for index in range(len(trickle.data)):
            if writer.is_closing():
                raise ConnectionResetError("the client closed the connection")
            writer.write(trickle.data[index : index + 1])
            async with asyncio.timeout(self._idle):
                await writer.drain()
            await self._sleep(trickle.interval)

    async def _stay_silent(self, lines: _LineReader) -> None:
        """Say nothing until the client leaves (or ``idle_timeout``), reading what it sends."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._idle):
                while await lines.readline() is not None:
                    pass

    async def _start_tls(
        self, session: _Session, lines: _LineReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Upgrade to TLS after ``220 Ready to start TLS`` (RFC 3207 §4); False on failure."""
        assert self._tls is not None  # STARTTLS is accepted only when TLS is offered
        session.upgrade = False
        lines.discard_buffer()
        try:
            await writer.start_tls(self._tls, ssl_handshake_timeout=self._idle)
        except (OSError, TimeoutError):
            return False
        # RFC 3207 §4.2: the session starts over; the client must EHLO again.
        session.tls, session.greeted = True, False
        session.reset_transaction()
        self.stats.tls_sessions += 1
        return True

    def _dispatch(self, session: _Session, raw: bytes) -> tuple[str, Reply]:
        """The command's verb (upper case) and the reply to it."""
        line = raw.decode("utf-8", "surrogateescape")
        verb, _, argument = line.strip().partition(" ")
        verb = verb.upper()
        handler = self._commands.get(verb)
        return verb, _UNKNOWN if handler is None else handler(session, argument.strip())

    def _ehlo(self, session: _Session, argument: str) -> Reply:
        return self._hello(session, "EHLO", argument)

    def _helo(self, session: _Session, argument: str) -> Reply:
        return self._hello(session, "HELO", argument)

    def _data(self, session: _Session, argument: str) -> Reply:
        self.stats.data_commands += 1
        return Reply.of(554, "5.5.1 Error: the mxprobe sandbox never accepts DATA")

    def _rset(self, session: _Session, argument: str) -> Reply:
        self.stats.rset += 1
        session.reset_transaction()
        return _OK

    def _noop(self, session: _Session, argument: str) -> Reply:
        return _OK

    def _quit(self, session: _Session, argument: str) -> Reply:
        self.stats.quits += 1
        return Reply.of(221, "2.0.0 Bye", close=True)

    def _vrfy(self, session: _Session, argument: str) -> Reply:
        return Reply.of(502, "5.5.1 VRFY command is disabled")

    def _expn(self, session: _Session, argument: str) -> Reply:
        return Reply.of(502, "5.5.1 EXPN command is disabled")

    def _hello(self, session: _Session, verb: str, argument: str) -> Reply:
        if not argument:
            return Reply.of(501, f"5.5.4 Syntax: {verb} hostname")
        if verb == "EHLO" and self.host.behaviour is Behaviour.HELO_ONLY:
            # An RFC 821-era server: the client must fall back to HELO (RFC 5321 §4.1.4).
            return Reply.of(502, "5.5.2 Error: command not recognized")
        session.greeted = True
        session.reset_transaction()
        if not session.counted:
            session.counted = True
            self.stats.sessions += 1
        if verb == "HELO":
            return Reply.of(250, self.host.name)
        offer = self._tls is not None and not session.tls
        return self._policy.ehlo(session.client_ip, offer_starttls=offer)

    def _mail(self, session: _Session, argument: str) -> Reply:
        if not session.greeted:
            return Reply.of(503, "5.5.1 Error: send HELO/EHLO first")
        if session.sender is not None:
            return Reply.of(503, "5.5.1 Error: nested MAIL command")
        match = _PATH.match(argument)
        if match is None or match["kw"].upper() != "FROM":
            return Reply.of(501, "5.5.4 Syntax: MAIL FROM:<address>")
        for param in match["params"].split():
            key, _, value = param.partition("=")
            key = key.upper()
            if key not in _MAIL_PARAMS:
                return Reply.of(555, f"5.5.4 Unsupported option: {param}")
            if key == "SIZE" and not value.isdigit():
                return Reply.of(501, "5.5.4 Bad message size syntax")
            if key == "SIZE" and int(value) > MAX_MESSAGE_SIZE:  # RFC 1870 §6
                return Reply.of(552, "5.3.4 Message size exceeds fixed limit")
            if key == "BODY" and value.upper() not in _BODIES:
                return Reply.of(501, "5.5.4 Unsupported BODY type")
        sender = match["addr"].strip()
        self.stats.sender_seen(sender)
        reply = self._policy.mail_from(sender)
        if reply.code == 250:
            session.sender = sender
        return reply

    def _rcpt(self, session: _Session, argument: str) -> Reply:
        self.stats.rcpt_received(self._clock())
        if session.sender is None:
            return Reply.of(503, "5.5.1 Error: need MAIL command")
        match = _PATH.match(argument)
        if match is None or match["kw"].upper() != "TO":
            return Reply.of(501, "5.5.4 Syntax: RCPT TO:<address>")
        if match["params"].strip():
            return Reply.of(555, f"5.5.4 Unsupported option: {match['params'].strip()}")
        recipient = match["addr"].strip()
        # Drop an RFC 5321 §4.1.2 source route ("@relay:user@domain").
        recipient = recipient.rsplit(":", 1)[-1] if recipient.startswith("@") else recipient
        if recipient.lower() == "postmaster":  # RFC 5321 §4.5.1: must be accepted
            return Reply.of(250, "2.1.5 Ok")
        local, at, domain = recipient.rpartition("@")
        if not at or not local or not domain:
            return Reply.of(501, f"5.1.3 <{recipient}>: Bad recipient address syntax")
        reply = self._policy.rcpt(session.client_ip, session.sender, recipient)
        session.hang_up = self._policy.hangs_up_after_rcpt
        return reply

    def _starttls(self, session: _Session, argument: str) -> Reply:
        if self._tls is None:
            return Reply.of(502, "5.5.1 Error: command not implemented")
        if session.tls:
            return Reply.of(554, "5.5.1 Error: TLS already active")
        if argument:
            return Reply.of(501, "5.5.4 Syntax: STARTTLS")
        session.upgrade = True
        return Reply.of(220, "2.0.0 Ready to start TLS")
