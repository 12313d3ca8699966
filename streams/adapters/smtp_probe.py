"""SMTP probe sessions over aiosmtplib: EHLO, MAIL FROM, RCPT TO…, RSET, QUIT.

Never DATA: a probe asks the mail host whether it would accept each
recipient and stops there. Every decision (which target, reuse, failover,
new sessions, the null-sender fallback, 421, 452, QUIT or close) is made by
the pure :class:`~streams.core.session.SessionMachine`; :class:`SmtpProber`
is the loop that carries out its commands: each SMTP step through
:class:`~streams.adapters.smtp_session.SessionSteps` (deadlines, and every
foreign error mapped once to an event), and the idle sessions through
:class:`~streams.adapters.session_pool.IdleSessions`.

Sessions outlive a batch. When a batch ends normally, its session is parked
for ``idle_timeout`` seconds (a few per target), keyed by its
:class:`Target`; a later :meth:`SmtpProber.probe` to that target takes it,
and the machine checks it with RSET and carries on with MAIL FROM. A session
the host closed meanwhile is dropped quietly and a new one opened, as if
none had been parked. A parked session nobody takes is QUIT when its idle
time is up, and :meth:`SmtpProber.aclose` QUITs them all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from streams.adapters.session_pool import IDLE_PER_TARGET, IdleSessions, Session, quit_politely
from streams.adapters.smtp_failures import QUOTE_LIMIT
from streams.adapters.smtp_session import ProbeConfig, SessionSteps
from streams.core.probe import ProbeOutcome
from streams.core.route import Target
from streams.core.session import SessionMachine
from streams.core.session_events import (
    Close,
    Connect,
    Ending,
    Finished,
    IdleTaken,
    NoIdle,
    Park,
    Quit,
    Rcpt,
    TakeIdle,
)

__all__ = [
    "IDLE_PER_TARGET",
    "QUOTE_LIMIT",
    "ProbeConfig",
    "ProbeOutcome",
    "SmtpProber",
    "Target",
]

log = logging.getLogger(__name__)


class SmtpProber:
    """Runs probe sessions against a mail host's addresses, reusing idle sessions."""

    def __init__(self, config: ProbeConfig) -> None:
        self._config = config
        self._steps = SessionSteps(config)
        self._idle = IdleSessions(config.idle_timeout, quit_timeout=config.command_timeout)

    async def aclose(self) -> None:
        """QUIT every idle session; later batches still probe, but park no session."""
        await self._idle.aclose()

    async def probe(
        self,
        targets: Sequence[Target],
        recipients: Sequence[str],
        *,
        smtputf8: bool = False,
        max_sessions: int,
        rcpt_per_session: int,
    ) -> ProbeOutcome:
        """Ask the first reachable target about every recipient.

        A session parked by an earlier batch to one of ``targets`` is used
        first (the first such target in order). Otherwise targets are tried in
        order; the next one is used when a connection fails, the banner is not
        220 (a 421 in particular), or the host answers 421 or hangs up before
        answering any recipient. When a host drops the session after answering
        some recipients, or a session has sent ``rcpt_per_session`` RCPTs, the
        rest go to a new session with it, at most ``max_sessions`` new
        sessions in all.

        Args:
            targets: the mail host's addresses, in preference order.
            recipients: the addresses to ask about (duplicates are asked once).
            smtputf8: some recipient needs SMTPUTF8 (RFC 6531).
            max_sessions: new sessions this batch may open.
            rcpt_per_session: the most RCPTs one session sends in all, for this
                host (at least 1).

        Returns:
            One :class:`~streams.core.probe.RcptOutcome` per recipient (never
            raises for what a server does).
        """
        config = self._config
        machine = SessionMachine(
            targets,
            recipients,
            smtputf8=smtputf8,
            max_sessions=max_sessions,
            rcpt_per_session=rcpt_per_session,
            rcpt_per_transaction=config.rcpt_per_transaction,
            mail_from=config.mail_from,
            starttls=config.starttls,
        )
        session: Session | None = None
        target: Target | None = None  # the last one taken or connected to, for the log
        try:
            while not isinstance(command := machine.next_command(), Finished):
                match command:
                    case Rcpt() if session is not None:  # most commands: the shortest way
                        event = await self._steps.send(session.smtp, session.target, command)
                        machine.receive(event)
                    case TakeIdle(targets=wanted):
                        session = self._idle.take(wanted)
                        target = None if session is None else session.target
                        machine.receive(NoIdle() if session is None else _taken(session))
                    case Connect(target=target):
                        smtp, event = await self._steps.connect(target)
                        session = None if smtp is None else Session(smtp, target)
                        machine.receive(event)
                    case Quit() | Close() | Park():
                        await self._end(session, command, target)
                        session = None
                    case _:
                        if session is None:  # pragma: no cover - the machine opens sessions
                            raise RuntimeError(f"{command!r} without a session")
                        event = await self._steps.send(session.smtp, session.target, command)
                        machine.receive(event)
        finally:
            if session is not None:  # cancelled mid-session: nothing can be paired any more
                session.smtp.close()
        return command.outcome

    async def _end(
        self, session: Session | None, command: Quit | Close | Park, target: Target | None
    ) -> None:
        """Park the session, QUIT it, or close it without QUIT, as ``command`` says."""
        if isinstance(command, Quit | Close):
            _log_end(target, command.why)
        if session is None:  # no TCP connection was made
            return
        if isinstance(command, Park):
            session.rcpts = command.rcpts
            if self._idle.park(session):
                return
        if isinstance(command, Close):
            session.smtp.close()  # the reply to QUIT could not be paired either
        else:
            await quit_politely(session.smtp, self._config.command_timeout)


def _taken(session: Session) -> IdleTaken:
    """A session taken from the idle pool, as the machine learns of it."""
    extra = {"host": session.target.host, "address": session.target.address}
    log.debug("smtp.session_reused", extra={**extra, "rcpts": session.rcpts})
    extensions = frozenset(session.smtp.esmtp_extensions)
    return IdleTaken(session.target, session.rcpts, extensions)


def _log_end(target: Target | None, why: Ending) -> None:
    """Log the endings that say something about the host: stale, or failed over."""
    if target is not None and why in (Ending.STALE, Ending.FAILOVER):
        name = "smtp.session_stale" if why is Ending.STALE else "smtp.failover"
        log.debug(name, extra={"host": target.host, "address": target.address})
