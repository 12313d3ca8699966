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
when a session is full (it is QUIT). Reply sizes are bounded by aiosmtplib
(8 KiB a line, 32 KiB a reply).

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

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiosmtplib

from streams.adapters.session_pool import IDLE_PER_TARGET, IdleSessions, Session, quit_politely
from streams.core.replies import Phase, ReplyClass, SmtpReply, classify
from streams.core.verdict import SessionFailure

__all__ = [
    "IDLE_PER_TARGET",
    "ProbeConfig",
    "ProbeOutcome",
    "RcptOutcome",
    "SmtpProber",
    "Target",
]

log = logging.getLogger(__name__)


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
    """

    def __init__(
        self, outcome: RcptOutcome, *, resumable: bool = False, failover: bool = False
    ) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome
        self.resumable = resumable
        self.failover = failover


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
        alive = False
        try:
            await session.smtp.rset()
            alive = True
        except (aiosmtplib.SMTPException, OSError) as exc:
            extra = {"host": session.target.host, "error": _describe(exc)}
            log.debug("smtp.session_stale", extra=extra)
        finally:
            if not alive:
                await quit_politely(session.smtp, self._config.timeout)
        return alive

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
            if not parked:
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
        try:
            await smtp.connect()
            await _greet(smtp, config.helo)
            if config.starttls and smtp.supports_extension("starttls"):
                await smtp.starttls(validate_certs=False)
                await _greet(smtp, config.helo)
        except aiosmtplib.SMTPConnectResponseError as exc:
            return RcptOutcome(
                "",
                reply=SmtpReply.from_message(exc.code, exc.message),
                phase=Phase.CONNECT,
                target=target,
            )
        except aiosmtplib.SMTPHeloError as exc:
            await quit_politely(smtp, config.timeout)
            return RcptOutcome(
                "",
                reply=SmtpReply.from_message(exc.code, exc.message),
                phase=Phase.EHLO,
                target=target,
            )
        except aiosmtplib.SMTPTimeoutError:
            smtp.close()
            return RcptOutcome(
                "",
                failure=SessionFailure.TIMEOUT,
                target=target,
                detail=f"No greeting from {target.host} ({target.address}) "
                f"within {config.timeout:g} s.",
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            return RcptOutcome(
                "",
                failure=SessionFailure.CONNECTION_FAILED,
                target=target,
                detail=f"Could not connect to {target.host} ({target.address}:{config.port}): "
                f"{_describe(exc)}.",
            )
        return smtp

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
            try:
                await smtp.mail(sender, options=options, encoding="utf-8" if utf8 else "ascii")
                return sender
            except aiosmtplib.SMTPSenderRefused as exc:
                reply = SmtpReply.from_message(exc.code, exc.message)
            except (aiosmtplib.SMTPException, OSError, UnicodeError) as exc:
                raise self._ended(target, Phase.MAIL, exc) from exc
            if sender or classify(reply, Phase.MAIL) is not ReplyClass.NULL_SENDER_REFUSED:
                break
        raise _refused(reply, Phase.MAIL, target)

    async def _rcpt(self, session: Session, recipient: str, *, utf8: bool) -> SmtpReply:
        session.rcpts += 1
        try:
            response = await session.smtp.rcpt(recipient, encoding="utf-8" if utf8 else "ascii")
        except aiosmtplib.SMTPRecipientRefused as exc:
            return SmtpReply.from_message(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError, UnicodeError) as exc:
            raise self._ended(session.target, Phase.RCPT, exc) from exc
        return SmtpReply.from_message(response.code, response.message)

    async def _rset(self, smtp: aiosmtplib.SMTP, target: Target) -> None:
        phase = Phase.RSET
        try:
            await smtp.rset()
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code < 0:
                raise self._ended(target, phase, exc) from exc
            reply = SmtpReply.from_message(exc.code, exc.message)
            raise _refused(reply, phase, target) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise self._ended(target, phase, exc) from exc

    def _ended(self, target: Target, phase: Phase, exc: BaseException) -> _SessionEnded:
        """Translate a foreign error mid-session into the outcome of the unanswered."""
        if isinstance(exc, aiosmtplib.SMTPTimeoutError):
            failure = SessionFailure.TIMEOUT
            detail = (
                f"{target.host} did not answer {phase.value.upper()} "
                f"within {self._config.timeout:g} s."
            )
        elif isinstance(exc, aiosmtplib.SMTPResponseException):
            failure = SessionFailure.PROTOCOL_ERROR
            detail = f"{target.host} sent an invalid reply to {phase.value.upper()}: {exc.message}."
        elif isinstance(exc, UnicodeError):
            failure = SessionFailure.PROTOCOL_ERROR
            detail = "The address cannot be sent without SMTPUTF8."
        else:
            failure = SessionFailure.DISCONNECTED
            detail = f"{target.host} closed the connection during {phase.value.upper()}."
        dropped = failure is SessionFailure.DISCONNECTED
        return _SessionEnded(
            RcptOutcome("", failure=failure, phase=phase, target=target, detail=detail),
            resumable=dropped,
            failover=dropped,
        )


def _refused(reply: SmtpReply, phase: Phase, target: Target) -> _SessionEnded:
    """A reply that ends the session before RCPT; a 421 lets the next MX be tried."""
    throttled = classify(reply, phase) is ReplyClass.RATE_LIMITED
    return _SessionEnded(
        RcptOutcome("", reply=reply, phase=phase, target=target), failover=throttled
    )


async def _greet(smtp: aiosmtplib.SMTP, helo: str) -> None:
    """EHLO, falling back to HELO when the host refuses EHLO (RFC 5321 §4.1.4)."""
    try:
        await smtp.ehlo(hostname=helo)
    except aiosmtplib.SMTPHeloError as exc:
        if exc.code == 421 or not smtp.is_connected:
            raise
        await smtp.helo(hostname=helo)


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


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
