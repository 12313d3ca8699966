"""SMTP probe sessions over aiosmtplib: EHLO, MAIL FROM, RCPT TO…, RSET, QUIT.

Never DATA: a probe asks the mail host whether it would accept each
recipient and stops there. aiosmtplib raises on every non-2xx reply; this
module and :mod:`streams.adapters.smtp_session` catch those exceptions once
and return the replies as :class:`~streams.core.replies.SmtpReply` values
(STYLE rule 3), so the rest of mxprobe sees only values.

A session carries many recipients (across domains served by the same host):
up to ``rcpt_per_transaction`` RCPTs per MAIL transaction, RSET between
transactions, and at most ``rcpt_per_session`` RCPTs in all. If the host
drops the connection after some replies, the remaining recipients go to a new
session, as long as every session makes progress; so do the recipients left
when a session is full (it is QUIT).

Each step (connect and greeting, then each command) is in
:mod:`streams.adapters.smtp_session`, with how hostile hosts end.

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

import aiosmtplib

from streams.adapters.session_pool import IDLE_PER_TARGET, IdleSessions, Session, quit_politely
from streams.adapters.smtp_failures import QUOTE_LIMIT, describe
from streams.adapters.smtp_session import BROKEN, ProbeConfig, SessionEnded, SessionSteps
from streams.core.probe import ProbeOutcome, RcptOutcome, SessionFailure
from streams.core.route import Target

__all__ = [
    "IDLE_PER_TARGET",
    "QUOTE_LIMIT",
    "ProbeConfig",
    "SmtpProber",
]

log = logging.getLogger(__name__)


class SmtpProber:
    """Runs probe sessions against a mail host's addresses, reusing idle sessions."""

    def __init__(self, config: ProbeConfig) -> None:
        self._config = config
        self._steps = SessionSteps(config)
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
            await self._steps.step(session.smtp, session.smtp.rset())
            return True
        except BROKEN as exc:
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
    ) -> SessionEnded | None:
        """Ask ``pending`` in ``session``, then park it or QUIT it; how it ended, if early."""
        ended: SessionEnded | None = None
        parked = False
        try:
            await self._steps.transact(session, pending, outcome, smtputf8=smtputf8, limit=limit)
            parked = (
                session.smtp.is_connected and session.rcpts < limit and self._idle.park(session)
            )
        except SessionEnded as exc:
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
            result = await self._steps.open(target)
            if isinstance(result, aiosmtplib.SMTP):
                outcome.sessions += 1
                return Session(result, target)
            last = result
            log.debug("smtp.failover", extra={"host": target.host, "address": target.address})
        return last


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
