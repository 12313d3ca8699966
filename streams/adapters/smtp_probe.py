"""SMTP probe sessions over aiosmtplib: EHLO, MAIL FROM, RCPT TO…, RSET, QUIT.

Never DATA: a probe asks the mail host whether it would accept each
recipient and stops there. aiosmtplib raises on every non-2xx reply; this
module catches those exceptions once and returns the replies as
:class:`~streams.core.replies.SmtpReply` values (STYLE rule 3), so the rest of
mxprobe sees only values.

A session carries many recipients (across domains served by the same host):
up to ``rcpt_per_transaction`` RCPTs per MAIL transaction, RSET between
transactions, and at most ``rcpt_per_session`` RCPTs in all. If the host
drops the connection after some replies, the remaining recipients go to a new
session, as long as every session makes progress; so do the recipients left
when a session is full (it is QUIT).

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

Sessions outlive a batch. When a batch ends normally, its session is parked
for ``idle_timeout`` seconds (a few per target), keyed by its
:class:`Target`; a later :meth:`SmtpProber.probe` to that target takes it,
checks it with RSET (which also ends the open transaction, RFC 5321
§4.1.1.5) and carries on with MAIL FROM. A session the host closed meanwhile
is dropped quietly and a new one opened, as if none had been parked. A parked
session nobody takes is QUIT when its idle time is up, and
:meth:`SmtpProber.aclose` QUITs them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import aiosmtplib

from streams.adapters.session_pool import (
    IDLE_PER_TARGET,
    IdleSessions,
    Session,
    quit_politely,
    unread_bytes,
)
from streams.adapters.smtp_failures import (
    QUOTE_LIMIT,
    UnsolicitedReply,
    describe,
    failure_of,
    readable_reply,
)
from streams.core.replies import Phase, ReplyClass, SmtpReply, classify
from streams.core.verdict import SessionFailure

__all__ = [
    "IDLE_PER_TARGET",
    "QUOTE_LIMIT",
    "ProbeConfig",
    "ProbeOutcome",
    "RcptOutcome",
    "SmtpProber",
    "Target",
]

log = logging.getLogger(__name__)

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


@dataclass(frozen=True, slots=True)
class Target:
    """One address of one mail host to connect to."""

    host: str
    address: str


@dataclass(frozen=True, slots=True)
class RcptOutcome:
    """What happened to one recipient: a reply (with its phase) or a failure."""

    recipient: str
    reply: SmtpReply | None = None
    phase: Phase = Phase.RCPT
    failure: SessionFailure | None = None
    target: Target | None = None
    detail: str = ""
    # Sessions the batch had used when this outcome was known: connections
    # attempted plus idle sessions reused (the verdict's attempts).
    connections: int = 0


@dataclass(slots=True)
class ProbeOutcome:
    """The outcome of every recipient of a batch, and what it cost."""

    results: dict[str, RcptOutcome] = field(default_factory=dict)
    sessions: int = 0  # new sessions in which EHLO succeeded
    connections: int = 0  # TCP connections attempted
    reused: int = 0  # idle sessions taken from an earlier batch

    @property
    def attempts(self) -> int:
        """Sessions used so far: connections attempted plus sessions reused."""
        return self.connections + self.reused


class _SessionEnded(Exception):
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


# What a broken session raises; _failure() turns each into an outcome.
_BROKEN = (aiosmtplib.SMTPException, OSError, UnicodeError, UnsolicitedReply)


class SmtpProber:
    """Runs probe sessions against a mail host's addresses, reusing idle sessions."""

    def __init__(self, config: ProbeConfig) -> None:
        self._config = config
        self._idle = IdleSessions(config.idle_timeout, quit_timeout=config.timeout)

    async def aclose(self) -> None:
        """QUIT every idle session; later batches still probe, but park no session."""
        await self._idle.aclose()

    async def probe(
        self,
        targets: Sequence[Target],
        recipients: Sequence[str],
        *,
        smtputf8: bool = False,
        max_sessions: int | None = None,
        rcpt_per_session: int | None = None,
    ) -> ProbeOutcome:
        """Ask the first reachable target about every recipient.

        A session parked by an earlier batch to one of ``targets`` is used
        first (the first such target in order). Otherwise targets are tried in
        order; the next one is used when a connection fails, the banner is not
        220 (a 421 in particular), or the host answers 421 or hangs up before
        answering any recipient. When a host drops the session after answering
        some recipients, or a session has sent ``rcpt_per_session`` RCPTs, the
        rest go to a new session with it, at most ``max_sessions`` new
        sessions in all. ``smtputf8`` says some recipient needs SMTPUTF8
        (RFC 6531).

        Args:
            targets: the mail host's addresses, in preference order.
            recipients: the addresses to ask about (duplicates are asked once).
            smtputf8: some recipient needs SMTPUTF8.
            max_sessions: new sessions this batch may open
                (default ``config.max_sessions``).
            rcpt_per_session: the most RCPTs one session sends in all, for this
                host (default ``config.rcpt_per_session``; at least 1).

        Returns:
            One :class:`RcptOutcome` per recipient (never raises for what a
            server does).
        """
        config = self._config
        budget = config.max_sessions if max_sessions is None else max_sessions
        limit = max(1, config.rcpt_per_session if rcpt_per_session is None else rcpt_per_session)
        outcome = ProbeOutcome()
        pending = list(dict.fromkeys(recipients))
        index = 0
        while pending:
            session = await self._reuse(targets[index:], outcome)
            if session is None and outcome.sessions >= budget:
                detail = (
                    f"The host ended {outcome.sessions} sessions before answering every "
                    "recipient; mxprobe stops there to stay polite."
                )
                give_up = RcptOutcome("", failure=SessionFailure.DISCONNECTED, detail=detail)
                _fill(outcome, pending, give_up)
                break
            if session is None:
                connected = await self._connect(targets, index, outcome)
                if isinstance(connected, RcptOutcome):
                    _fill(outcome, pending, connected)
                    break
                session = connected
            index = targets.index(session.target)  # a reconnect goes back to this host
            answered_before = len(outcome.results)
            ended = await self._carry(session, pending, outcome, smtputf8=smtputf8, limit=limit)
            pending = [r for r in pending if r not in outcome.results]
            if not pending:
                break
            progress = len(outcome.results) > answered_before
            if not progress and (ended is None or ended.failover) and index + 1 < len(targets):
                index += 1  # this host answered nobody: RFC 5321 §5.1, try the next MX
                continue
            if ended is not None and not (ended.resumable and progress):
                _fill(outcome, pending, ended.outcome)
                break
            if not progress:
                stalled = RcptOutcome(
                    "",
                    failure=SessionFailure.DISCONNECTED,
                    target=targets[index],
                    detail="The host ended the session before answering any recipient.",
                )
                _fill(outcome, pending, stalled)
                break
        return outcome

    async def _reuse(self, targets: Sequence[Target], outcome: ProbeOutcome) -> Session | None:
        """An idle session to one of ``targets`` that the host kept open, if any."""
        while (session := self._idle.take(targets)) is not None:
            if await self._still_open(session):
                outcome.reused += 1
                log.debug(
                    "smtp.session_reused",
                    extra={
                        "host": session.target.host,
                        "address": session.target.address,
                        "rcpts": session.rcpts,
                    },
                )
                return session
        return None

    async def _still_open(self, session: Session) -> bool:
        """RSET an idle session: it checks the host kept it open and ends the old transaction.

        Hosts close idle sessions on their own timeout (RFC 5321 §4.5.3.2.7
        asks for five minutes; many wait less): a session that does not answer
        RSET with 250 is closed, and that is all.
        """
        answered = False  # the host answered RSET with a reply (any code)
        try:
            await self._step(session.smtp, session.smtp.rset())
            return True
        except _BROKEN as exc:
            answered = isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 0
            extra = {"host": session.target.host, "error": describe(exc)}
            log.debug("smtp.session_stale", extra=extra)
        if answered:
            await quit_politely(session.smtp, self._config.timeout)
        else:
            session.smtp.close()  # timed out, dropped or garbled: QUIT would not pair either
        return False

    async def _carry(
        self,
        session: Session,
        pending: list[str],
        outcome: ProbeOutcome,
        *,
        smtputf8: bool,
        limit: int,
    ) -> _SessionEnded | None:
        """Ask ``pending`` in ``session``, then park it or QUIT it; how it ended, if early."""
        ended: _SessionEnded | None = None
        parked = False
        try:
            await self._session(session, pending, outcome, smtputf8=smtputf8, limit=limit)
            parked = (
                session.smtp.is_connected and session.rcpts < limit and self._idle.park(session)
            )
        except _SessionEnded as exc:
            ended = exc
        finally:
            if parked:
                pass
            elif ended is not None and ended.broken:
                session.smtp.close()  # the reply to QUIT could not be paired either
            else:
                await quit_politely(session.smtp, self._config.timeout)
        return ended

    async def _connect(
        self, targets: Sequence[Target], start: int, outcome: ProbeOutcome
    ) -> Session | RcptOutcome:
        """Connect and say EHLO (HELO as fallback), failing over across targets."""
        last = RcptOutcome("", failure=SessionFailure.CONNECTION_FAILED, detail="No targets.")
        for index in range(start, len(targets)):
            target = targets[index]
            outcome.connections += 1
            result = await self._open(target)
            if isinstance(result, aiosmtplib.SMTP):
                outcome.sessions += 1
                return Session(result, target)
            last = result
            log.debug("smtp.failover", extra={"host": target.host, "address": target.address})
        return last

    async def _open(self, target: Target) -> aiosmtplib.SMTP | RcptOutcome:
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
            await self._step(smtp, smtp.connect())
            phase, command = Phase.EHLO, "EHLO"
            await self._greet(smtp)
            if config.starttls and smtp.supports_extension("starttls"):
                command = "STARTTLS"
                await self._step(smtp, smtp.starttls(validate_certs=False))
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
        except _BROKEN as exc:
            smtp.close()
            return self._failure(target, phase, exc, command=command)
        return smtp

    async def _greet(self, smtp: aiosmtplib.SMTP) -> None:
        """EHLO, falling back to HELO when the host refuses EHLO (RFC 5321 §4.1.4)."""
        helo = self._config.helo
        try:
            await self._step(smtp, smtp.ehlo(hostname=helo))
        except aiosmtplib.SMTPHeloError as exc:
            if exc.code == 421 or not smtp.is_connected:
                raise
            await self._step(smtp, smtp.helo(hostname=helo))

    async def _step(self, smtp: aiosmtplib.SMTP, step: Awaitable[T]) -> T:
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

    async def _session(
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
                    raise _SessionEnded(RcptOutcome("", reply=reply, target=target), resumable=True)
                if retry_with_probe_sender or reply_class is ReplyClass.TOO_MANY_RECIPIENTS:
                    # A sender refused at RCPT (Postfix delays MAIL checks to RCPT):
                    # new transaction with the probe sender. Too many recipients
                    # (RFC 5321 §4.5.3.1.10): new transaction for the rest.
                    null_sender = null_sender and not retry_with_probe_sender
                    queue = batch[position:] + queue
                    break
                if reply_class is ReplyClass.RATE_LIMITED:
                    # 421 closes the session (RFC 5321 §3.8); the rest were not asked.
                    raise _SessionEnded(RcptOutcome("", reply=reply, target=target), failover=True)
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
                await self._step(smtp, smtp.mail(sender, options=options, encoding=encoding))
                return sender
            except aiosmtplib.SMTPSenderRefused as exc:
                reply = readable_reply(exc.code, exc.message)
            except _BROKEN as exc:
                raise self._ended(target, Phase.MAIL, exc) from exc
            if sender or classify(reply, Phase.MAIL) is not ReplyClass.NULL_SENDER_REFUSED:
                break
        raise _refused(reply, Phase.MAIL, target)

    async def _rcpt(self, session: Session, recipient: str, *, utf8: bool) -> SmtpReply:
        session.rcpts += 1
        smtp, encoding = session.smtp, "utf-8" if utf8 else "ascii"
        try:
            response = await self._step(smtp, smtp.rcpt(recipient, encoding=encoding))
        except aiosmtplib.SMTPRecipientRefused as exc:
            return readable_reply(exc.code, exc.message)
        except _BROKEN as exc:
            raise self._ended(session.target, Phase.RCPT, exc) from exc
        return readable_reply(response.code, response.message)

    async def _rset(self, smtp: aiosmtplib.SMTP, target: Target) -> None:
        phase = Phase.RSET
        try:
            await self._step(smtp, smtp.rset())
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code < 0:
                raise self._ended(target, phase, exc) from exc
            raise _refused(readable_reply(exc.code, exc.message), phase, target) from exc
        except _BROKEN as exc:
            raise self._ended(target, phase, exc) from exc

    def _ended(self, target: Target, phase: Phase, exc: BaseException) -> _SessionEnded:
        """Translate a foreign error mid-session into the outcome of the unanswered."""
        outcome = self._failure(target, phase, exc)
        dropped = outcome.failure is SessionFailure.DISCONNECTED
        # An address refused for SMTPUTF8 was never sent: the session itself is fine.
        broken = not isinstance(exc, UnicodeError)
        return _SessionEnded(outcome, resumable=dropped, failover=dropped, broken=broken)

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


def _refused(reply: SmtpReply, phase: Phase, target: Target) -> _SessionEnded:
    """A reply that ends the session before RCPT; a 421 lets the next MX be tried."""
    throttled = classify(reply, phase) is ReplyClass.RATE_LIMITED
    return _SessionEnded(
        RcptOutcome("", reply=reply, phase=phase, target=target), failover=throttled
    )


def _refuse_unsolicited(smtp: aiosmtplib.SMTP) -> None:
    """Raise when the host sent more than the reply just read (see :func:`unread_bytes`)."""
    count = unread_bytes(smtp)
    if count:
        raise UnsolicitedReply(count)


def _fill(outcome: ProbeOutcome, recipients: Sequence[str], template: RcptOutcome) -> None:
    """Give every recipient still without an outcome a copy of ``template``."""
    for recipient in recipients:
        if recipient not in outcome.results:
            outcome.results[recipient] = RcptOutcome(
                recipient,
                reply=template.reply,
                phase=template.phase,
                failure=template.failure,
                target=template.target,
                detail=template.detail,
                connections=outcome.attempts,
            )


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
