"""The steps of one SMTP probe session: connect and greet, MAIL FROM, RCPT TO…, RSET.

Never DATA. aiosmtplib raises on every non-2xx reply; these steps catch those
exceptions and return the replies as :class:`~streams.core.replies.SmtpReply`
values, or raise :class:`SessionEnded` with the outcome every unanswered
recipient gets. :class:`~streams.adapters.smtp_probe.SmtpProber` runs them,
across sessions, targets and batches.

Hostile hosts (issue 5; the sandbox's ``hostile`` world plays each) end in a
bounded time with a precise failure, and nothing they send is kept whole:

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

Every step - connecting with the greeting, then each command - must have its
whole reply within ``timeout`` seconds, however it trickles in (aiosmtplib's
own per-reply timeout, of the same length, is a backstop). A session that
broke this way is closed without QUIT, whose reply could not be paired
either, and is never parked. Words a host sends are quoted in details cut to
:data:`QUOTE_LIMIT` characters; reply texts are cut to
:data:`~streams.core.verdict.REPLY_TEXT_LIMIT` in the verdict.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import aiosmtplib

from streams.adapters.session_pool import Session, quit_politely, unread_bytes
from streams.adapters.smtp_failures import UnsolicitedReply, failure_of, readable_reply
from streams.core.probe import ProbeOutcome, RcptOutcome, SessionFailure
from streams.core.replies import Phase, ReplyClass, SmtpReply, classify
from streams.core.route import Target

__all__ = [
    "BROKEN",
    "ProbeConfig",
    "SessionEnded",
    "SessionSteps",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """What a probe session needs from Settings."""

    port: int = 25
    helo: str = "localhost"
    mail_from: str | None = None  # used when the host refuses the null sender
    timeout: float = 10.0  # per phase: connect+banner, each command
    starttls: bool = False
    source_address: str | None = None
    rcpt_per_transaction: int = 50
    # Sessions one batch may open when a host drops the connection mid-session.
    # Each new session must answer at least one more recipient, so a batch of N
    # recipients never opens more than N sessions; this caps even that.
    max_sessions: int = 50
    # Seconds a session stays open after its batch, for the next batch to the
    # same target; 0 QUITs every session at the end of its batch.
    idle_timeout: float = 2.0
    # The most RCPTs one session sends in all, across every batch it carries.
    rcpt_per_session: int = 50


class SessionEnded(Exception):
    """A session cannot go on; ``outcome`` is what every unanswered recipient gets.

    ``resumable``: the rest may be asked in a new session to the same host (the
    host dropped the connection, or wants fewer recipients per session).
    ``failover``: if nobody was answered yet, the next MX host may be tried (a
    421, or a drop, before any recipient was answered).
    ``broken``: replies can no longer be paired with commands (a timeout, a
    protocol error, a drop): the session is closed without QUIT.
    """

    def __init__(
        self,
        outcome: RcptOutcome,
        *,
        resumable: bool = False,
        failover: bool = False,
        broken: bool = False,
    ) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome
        self.resumable = resumable
        self.failover = failover
        self.broken = broken


# What a broken session raises; SessionSteps._failure() turns each into an outcome.
BROKEN = (aiosmtplib.SMTPException, OSError, UnicodeError, UnsolicitedReply)


class SessionSteps:
    """The steps of a probe session, each within ``config.timeout``."""

    def __init__(self, config: ProbeConfig) -> None:
        self._config = config

    async def open(self, target: Target) -> aiosmtplib.SMTP | RcptOutcome:
        config = self._config
        smtp = aiosmtplib.SMTP(
            hostname=target.address,
            port=config.port,
            local_hostname=config.helo,
            source_address=(config.source_address, 0) if config.source_address else None,
            timeout=config.timeout,
            use_tls=False,
            start_tls=False,
            validate_certs=False,
        )
        phase, command = Phase.CONNECT, "CONNECT"
        try:
            await self.step(smtp, smtp.connect())
            phase, command = Phase.EHLO, "EHLO"
            await self._greet(smtp)
            if config.starttls and smtp.supports_extension("starttls"):
                command = "STARTTLS"
                await self.step(smtp, smtp.starttls(validate_certs=False))
                command = "EHLO"
                await self._greet(smtp)
        except aiosmtplib.SMTPConnectResponseError as exc:
            return RcptOutcome(
                "", reply=readable_reply(exc.code, exc.message), phase=Phase.CONNECT, target=target
            )
        except aiosmtplib.SMTPHeloError as exc:
            await quit_politely(smtp, config.timeout)
            return RcptOutcome(
                "", reply=readable_reply(exc.code, exc.message), phase=Phase.EHLO, target=target
            )
        except BROKEN as exc:
            smtp.close()
            return self._failure(target, phase, exc, command=command)
        return smtp

    async def _greet(self, smtp: aiosmtplib.SMTP) -> None:
        """EHLO, falling back to HELO when the host refuses EHLO (RFC 5321 §4.1.4)."""
        helo = self._config.helo
        try:
            await self.step(smtp, smtp.ehlo(hostname=helo))
        except aiosmtplib.SMTPHeloError as exc:
            if exc.code == 421 or not smtp.is_connected:
                raise
            await self.step(smtp, smtp.helo(hostname=helo))

    async def step(self, smtp: aiosmtplib.SMTP, step: Awaitable[T]) -> T:
        """Await one step (connect and greeting, or one command) within ``timeout``.

        The deadline covers the whole reply however slowly it trickles in. A
        reply followed by bytes nobody asked for is not trusted: it may be
        an earlier reply, or the real one may be the bytes that follow.

        Raises:
            TimeoutError: the reply was not complete in time (the connection
                is left open: the caller closes it).
            UnsolicitedReply: the host sent more than the reply.
            aiosmtplib.SMTPException: as the aiosmtplib call raises it.
        """
        try:
            async with asyncio.timeout(self._config.timeout):
                result = await step
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 0:
                _refuse_unsolicited(smtp)  # a reply, but only if nothing came after it
            raise
        _refuse_unsolicited(smtp)
        return result

    async def transact(
        self,
        session: Session,
        pending: list[str],
        outcome: ProbeOutcome,
        *,
        smtputf8: bool,
        limit: int,
    ) -> None:
        """Run MAIL/RCPT transactions until every pending recipient has a reply.

        Returns early when the session has sent ``limit`` RCPTs (the rest go
        to a new session) or the host closed it.
        """
        smtp, target = session.smtp, session.target
        config = self._config
        utf8 = smtputf8 and smtp.supports_extension("smtputf8")
        queue = list(pending)
        if smtputf8 and not utf8:
            _refuse_without_smtputf8(queue, target, outcome)
        first_transaction = True
        null_sender = True  # until the host refuses <> (at MAIL, or at RCPT like Postfix)
        while queue and session.rcpts < limit:
            if not first_transaction:
                await self._rset(smtp, target)
            first_transaction = False
            sender = await self._mail_from(smtp, target, utf8=utf8, null_sender=null_sender)
            null_sender = sender == ""
            batch, queue = (
                queue[: config.rcpt_per_transaction],
                queue[config.rcpt_per_transaction :],
            )
            for position, recipient in enumerate(batch):
                if session.rcpts >= limit:
                    return  # the session is full: the rest go to a new one
                reply = await self._rcpt(session, recipient, utf8=utf8)
                reply_class = classify(reply, Phase.RCPT)
                retry_with_probe_sender = (
                    reply_class is ReplyClass.NULL_SENDER_REFUSED
                    and null_sender
                    and config.mail_from is not None
                )
                if reply_class is ReplyClass.TOO_MANY_RECIPIENTS and position == 0:
                    # Fewer recipients per session, not per transaction: a new session.
                    raise SessionEnded(RcptOutcome("", reply=reply, target=target), resumable=True)
                if retry_with_probe_sender or reply_class is ReplyClass.TOO_MANY_RECIPIENTS:
                    # A sender refused at RCPT (Postfix delays MAIL checks to RCPT):
                    # new transaction with the probe sender. Too many recipients
                    # (RFC 5321 §4.5.3.1.10): new transaction for the rest.
                    null_sender = null_sender and not retry_with_probe_sender
                    queue = batch[position:] + queue
                    break
                if reply_class is ReplyClass.RATE_LIMITED:
                    # 421 closes the session (RFC 5321 §3.8); the rest were not asked.
                    raise SessionEnded(RcptOutcome("", reply=reply, target=target), failover=True)
                outcome.results[recipient] = RcptOutcome(
                    recipient, reply=reply, target=target, connections=outcome.attempts
                )
                if not smtp.is_connected:
                    return

    async def _mail_from(
        self, smtp: aiosmtplib.SMTP, target: Target, *, utf8: bool, null_sender: bool
    ) -> str:
        """Open a transaction; returns the sender the host accepted.

        The null sender ``<>`` first (RFC 5321 §4.5.5: it cannot bounce to
        anyone); when the host refuses it, the configured probe address.
        """
        mail_from = self._config.mail_from
        senders = ([""] if null_sender else []) + ([mail_from] if mail_from else [])
        options = ["SMTPUTF8"] if utf8 else []
        reply = SmtpReply(0)
        for sender in senders or [""]:
            if reply.code:
                await self._rset(smtp, target)
            encoding = "utf-8" if utf8 else "ascii"
            try:
                await self.step(smtp, smtp.mail(sender, options=options, encoding=encoding))
                return sender
            except aiosmtplib.SMTPSenderRefused as exc:
                reply = readable_reply(exc.code, exc.message)
            except BROKEN as exc:
                raise self._ended(target, Phase.MAIL, exc) from exc
            if sender or classify(reply, Phase.MAIL) is not ReplyClass.NULL_SENDER_REFUSED:
                break
        raise _refused(reply, Phase.MAIL, target)

    async def _rcpt(self, session: Session, recipient: str, *, utf8: bool) -> SmtpReply:
        session.rcpts += 1
        smtp, encoding = session.smtp, "utf-8" if utf8 else "ascii"
        try:
            response = await self.step(smtp, smtp.rcpt(recipient, encoding=encoding))
        except aiosmtplib.SMTPRecipientRefused as exc:
            return readable_reply(exc.code, exc.message)
        except BROKEN as exc:
            raise self._ended(session.target, Phase.RCPT, exc) from exc
        return readable_reply(response.code, response.message)

    async def _rset(self, smtp: aiosmtplib.SMTP, target: Target) -> None:
        phase = Phase.RSET
        try:
            await self.step(smtp, smtp.rset())
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code < 0:
                raise self._ended(target, phase, exc) from exc
            raise _refused(readable_reply(exc.code, exc.message), phase, target) from exc
        except BROKEN as exc:
            raise self._ended(target, phase, exc) from exc

    def _ended(self, target: Target, phase: Phase, exc: BaseException) -> SessionEnded:
        """Translate a foreign error mid-session into the outcome of the unanswered."""
        outcome = self._failure(target, phase, exc)
        dropped = outcome.failure is SessionFailure.DISCONNECTED
        # An address refused for SMTPUTF8 was never sent: the session itself is fine.
        broken = not isinstance(exc, UnicodeError)
        return SessionEnded(outcome, resumable=dropped, failover=dropped, broken=broken)

    def _failure(
        self, target: Target, phase: Phase, exc: BaseException, *, command: str = ""
    ) -> RcptOutcome:
        """The outcome (failure and sentence) of ``exc`` at ``phase``: :func:`failure_of`."""
        failure, detail = failure_of(
            target.host,
            target.address,
            phase,
            exc,
            timeout=self._config.timeout,
            port=self._config.port,
            command=command,
        )
        return RcptOutcome("", failure=failure, phase=phase, target=target, detail=detail)


def _refused(reply: SmtpReply, phase: Phase, target: Target) -> SessionEnded:
    """A reply that ends the session before RCPT; a 421 lets the next MX be tried."""
    throttled = classify(reply, phase) is ReplyClass.RATE_LIMITED
    return SessionEnded(
        RcptOutcome("", reply=reply, phase=phase, target=target), failover=throttled
    )


def _refuse_unsolicited(smtp: aiosmtplib.SMTP) -> None:
    """Raise when the host sent more than the reply just read (see :func:`unread_bytes`)."""
    count = unread_bytes(smtp)
    if count:
        raise UnsolicitedReply(count)


def _refuse_without_smtputf8(queue: list[str], target: Target, outcome: ProbeOutcome) -> None:
    """Answer (and drop from ``queue``) the recipients that need SMTPUTF8 the host lacks."""
    for recipient in [r for r in queue if not r.isascii()]:
        outcome.results[recipient] = RcptOutcome(
            recipient,
            failure=SessionFailure.PROTOCOL_ERROR,
            target=target,
            detail="The host does not support SMTPUTF8 (RFC 6531), which this address needs.",
        )
        queue.remove(recipient)
