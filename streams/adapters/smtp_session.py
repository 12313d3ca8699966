"""The I/O of one SMTP probe session: each command of the session machine over aiosmtplib.

:class:`SessionSteps` carries out a command of
:class:`~streams.core.session.SessionMachine` (connect and read the greeting,
EHLO, HELO, STARTTLS, MAIL FROM, RCPT TO, RSET; never DATA) within that
step's own deadline, and turns what came of it into exactly one event of
:mod:`streams.core.session_events`: the reply as a value (aiosmtplib raises
on every reply it does not like; those are replies too, STYLE rule 3), or
the failure with a sentence from :func:`~streams.adapters.smtp_failures.failure_of`.
What to do next is the machine's decision, never this module's.

Hostile hosts (the sandbox's ``hostile`` world plays each) end in a bounded
time with a precise failure, and nothing they send is kept whole:

================================  ==================  ====================================
what the host does                failure             why it ends, and soon
================================  ==================  ====================================
a reply that never ends           ``protocol_error``  aiosmtplib stops at 32 KiB a reply
a line of 1 MiB                   ``protocol_error``  ... and at 8 KiB a line
bytes where the reply code goes   ``protocol_error``  the line is refused at once
bytes that are not UTF-8 in text  (the reply counts)  read as U+FFFD; the codes decide
replies trickling byte by byte    ``timeout``         a deadline per step (below)
closes in the middle of a reply   ``disconnected``    EOF ends the wait
a reply ahead of its command      ``protocol_error``  :func:`unread_bytes` after each reply
no banner at all                  ``timeout``         a deadline per step (below)
================================  ==================  ====================================

Each phase has its own deadline (STYLE rule 6): opening the TCP connection
``connect_timeout``, the 220 greeting ``banner_timeout``, and each command's
whole reply ``command_timeout``, however slowly it trickles in (aiosmtplib's
own per-reply timeout, of the same length, is a backstop). The TCP
connection is opened here and handed to aiosmtplib, so that the connect
and the greeting are timed apart. Words a host sends are quoted in details
cut to :data:`~streams.adapters.smtp_failures.QUOTE_LIMIT` characters; reply
texts are cut to :data:`~streams.core.verdict.REPLY_TEXT_LIMIT` in the verdict.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable
from dataclasses import dataclass

import aiosmtplib

from streams.adapters.session_pool import unread_bytes
from streams.adapters.smtp_failures import UnsolicitedReply, failure_of, readable_reply
from streams.core.replies import Phase
from streams.core.route import Target
from streams.core.session_events import (
    Connect,
    Ehlo,
    Failed,
    Helo,
    Mail,
    Rcpt,
    Replied,
    Rset,
    Send,
    StartTls,
    Unsendable,
)

__all__ = ["ProbeConfig", "SessionSteps"]

# What a broken step raises; SessionSteps turns each into one event.
_BROKEN = (aiosmtplib.SMTPException, OSError, UnicodeError, UnsolicitedReply)

Answer = Replied | Failed | Unsendable


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """What a probe session needs from Settings."""

    port: int = 25
    helo: str = "localhost"
    mail_from: str | None = None  # used when the host refuses the null sender
    connect_timeout: float = 10.0  # seconds to open the TCP connection
    banner_timeout: float = 10.0  # seconds for the whole 220 greeting
    command_timeout: float = 10.0  # seconds for each command's whole reply
    starttls: bool = False
    source_address: str | None = None
    rcpt_per_transaction: int = 25
    # Seconds a session stays open after its batch, for the next batch to the
    # same target; 0 QUITs every session at the end of its batch.
    idle_timeout: float = 2.0


_NO_EXTENSIONS: frozenset[str] = frozenset()


class SessionSteps:
    """Carries out the machine's commands, each within its phase's deadline."""

    def __init__(self, config: ProbeConfig) -> None:
        self._config = config

    async def connect(self, target: Target) -> tuple[aiosmtplib.SMTP | None, Answer]:
        """Open a connection to ``target`` and read its greeting.

        Returns:
            The client (None when no TCP connection was made) and the greeting
            as :class:`Replied`, or the :class:`Failed` step.
        """
        config = self._config
        try:
            sock = await self._open_socket(target.address)
        except OSError as exc:  # TimeoutError included
            failure, detail = failure_of(
                target.host,
                target.address,
                Phase.CONNECT,
                exc,
                timeout=config.connect_timeout,
                port=config.port,
                connecting=True,
            )
            return None, Failed(failure, detail)
        smtp = aiosmtplib.SMTP(
            hostname=target.address,  # with sock: for the TLS server name only
            local_hostname=config.helo,
            timeout=config.command_timeout,
            use_tls=False,
            start_tls=False,
            validate_certs=False,
        )
        greeting = smtp.connect(sock=sock, timeout=config.banner_timeout)
        event = await self._await(
            smtp, target, greeting, phase=Phase.CONNECT, deadline=config.banner_timeout
        )
        if not smtp.is_connected:  # aiosmtplib gave the connection up, or never took it
            sock.close()
        return smtp, event

    async def send(self, smtp: aiosmtplib.SMTP, target: Target, command: Send) -> Answer:
        """Send ``command`` (anything but :class:`Connect`) and map what came of it."""
        helo = self._config.helo
        step: Awaitable[aiosmtplib.SMTPResponse]
        match command:  # RCPT first: most commands are RCPTs
            case Rcpt(recipient=recipient, smtputf8=utf8):
                encoding = "utf-8" if utf8 else "ascii"
                phase, name, step = Phase.RCPT, "RCPT", smtp.rcpt(recipient, encoding=encoding)
            case Ehlo():
                phase, name, step = Phase.EHLO, "EHLO", smtp.ehlo(hostname=helo)
            case Helo():
                phase, name, step = Phase.EHLO, "HELO", smtp.helo(hostname=helo)
            case StartTls():
                # aiosmtplib raises for a refused STARTTLS: a failed step, not a reply.
                step = smtp.starttls(validate_certs=False)
                return await self._await(
                    smtp, target, step, phase=Phase.EHLO, name="STARTTLS", refusal_fails=True
                )
            case Mail(sender=sender, smtputf8=utf8):
                options, encoding = (["SMTPUTF8"], "utf-8") if utf8 else ([], "ascii")
                phase, name = Phase.MAIL, "MAIL"
                step = smtp.mail(sender, options=options, encoding=encoding)
            case Rset():
                phase, name, step = Phase.RSET, "RSET", smtp.rset()
            case Connect():  # pragma: no cover - connect() opens sessions
                raise TypeError("a Connect is carried out by SessionSteps.connect()")
        return await self._await(smtp, target, step, phase=phase, name=name)

    async def _open_socket(self, address: str) -> socket.socket:
        """A TCP connection to ``address``, made within ``connect_timeout``.

        Raises:
            OSError: no connection (TimeoutError when the deadline passed).
        """
        config = self._config
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if config.source_address:
                sock.bind((config.source_address, 0))
            async with asyncio.timeout(config.connect_timeout):
                await asyncio.get_running_loop().sock_connect(sock, (address, config.port))
        except BaseException:
            sock.close()
            raise
        return sock

    async def _await(
        self,
        smtp: aiosmtplib.SMTP,
        target: Target,
        step: Awaitable[aiosmtplib.SMTPResponse],
        *,
        phase: Phase,
        name: str = "",
        deadline: float | None = None,
        refusal_fails: bool = False,
    ) -> Answer:
        """Await one step within its deadline and map what came of it to one event.

        The deadline (default ``command_timeout``) covers the whole reply
        however slowly it trickles in. A reply followed by bytes nobody asked
        for is not trusted: it may be an earlier reply, or the real one may be
        the bytes that follow. ``refusal_fails``: a reply aiosmtplib raises
        for is a failed step.
        """
        deadline = self._config.command_timeout if deadline is None else deadline
        try:
            async with asyncio.timeout(deadline):
                response = await step
            reply = readable_reply(response.code, response.message)
        except aiosmtplib.SMTPResponseException as exc:
            # A negative code: aiosmtplib refused what the host sent as a reply.
            if exc.code < 0 or refusal_fails:
                return self._failed(target, phase, exc, name=name, deadline=deadline)
            reply = readable_reply(exc.code, exc.message)
        except _BROKEN as exc:
            return self._failed(target, phase, exc, name=name, deadline=deadline)
        unread = unread_bytes(smtp)
        if unread:
            return self._failed(
                target, phase, UnsolicitedReply(unread), name=name, deadline=deadline
            )
        extensions = frozenset(smtp.esmtp_extensions) if phase is Phase.EHLO else _NO_EXTENSIONS
        return Replied(reply, extensions=extensions, closed=not smtp.is_connected)

    def _failed(
        self,
        target: Target,
        phase: Phase,
        exc: BaseException,
        *,
        name: str,
        deadline: float,
    ) -> Failed | Unsendable:
        """The event of ``exc`` at ``phase``, its sentence by :func:`failure_of`."""
        failure, detail = failure_of(
            target.host,
            target.address,
            phase,
            exc,
            timeout=deadline,
            port=self._config.port,
            command=name,
        )
        if isinstance(exc, UnicodeError):  # nothing was sent: the session is still sound
            return Unsendable(detail)
        return Failed(failure, detail)
