"""Idle SMTP sessions kept between batches, and closing a session politely.

A probe batch that ends normally parks its session here instead of QUIT;
the next batch for the same mail host takes it, which saves a connection,
a greeting and an EHLO per batch and keeps under the host's connection rate.
Each parked session is QUIT when its idle time is up, or at
:meth:`IdleSessions.aclose`. Only a healthy session is parked: one still
connected, with no bytes read beyond its last reply (:func:`unread_bytes`);
anything else could pair a stale reply with the next batch's command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiosmtplib

from streams.core.route import Target

__all__ = ["IDLE_PER_TARGET", "IdleSessions", "Session", "quit_politely", "unread_bytes"]

log = logging.getLogger("streams.adapters.smtp_probe")

#: The most idle sessions kept per target; more are QUIT.
IDLE_PER_TARGET = 4


@dataclass(eq=False, slots=True)
class Session:
    """An open SMTP session: its client, the target it talks to, the RCPTs it sent."""

    smtp: aiosmtplib.SMTP
    target: Target
    rcpts: int = 0


class IdleSessions:
    """Sessions parked between batches, by target; each is QUIT when its idle time is up.

    Every parked session has a task that sleeps ``idle_timeout`` seconds and
    then QUITs it; taking the session cancels the task. A task cancelled while
    its session is still parked means the event loop is shutting down
    (``asyncio.run`` cancels leftover tasks): it closes the connection at once,
    so no socket outlives the loop.
    """

    def __init__(self, idle_timeout: float, *, quit_timeout: float) -> None:
        self._idle_timeout = idle_timeout
        self._quit_timeout = quit_timeout
        self._parked: dict[Target, list[tuple[Session, asyncio.Task[None]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references
        self._closed = False

    def park(self, session: Session) -> bool:
        """Keep ``session`` for a later batch; False when it must be QUIT instead.

        A session that is closed, or holds bytes beyond its last reply, is
        never parked (whoever ended it abnormally should have closed it).
        """
        parked = self._parked.get(session.target, [])
        if self._closed or self._idle_timeout <= 0 or len(parked) >= IDLE_PER_TARGET:
            return False
        if not session.smtp.is_connected or unread_bytes(session.smtp):
            return False
        task = asyncio.get_running_loop().create_task(
            self._expire(session), name=f"idle SMTP session to {session.target.host}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._parked[session.target] = [*parked, (session, task)]
        return True

    def take(self, targets: Sequence[Target]) -> Session | None:
        """The newest parked session to the first of ``targets`` that has one, if any."""
        for target in targets:
            parked = self._parked.get(target)
            if parked:
                session, task = parked[-1]
                self._unpark(session)
                task.cancel()
                return session
        return None

    async def aclose(self) -> None:
        """QUIT every parked session and park none from now on."""
        self._closed = True
        parked = [entry for entries in self._parked.values() for entry in entries]
        self._parked.clear()
        for session, task in parked:
            task.cancel()
            _log_idle_closed(session)
        quits = (quit_politely(session.smtp, self._quit_timeout) for session, _ in parked)
        await asyncio.gather(*quits, *self._tasks, return_exceptions=True)

    def _unpark(self, session: Session) -> bool:
        """Remove ``session`` from the parked ones; False when it was not parked."""
        parked = self._parked.get(session.target, [])
        remaining = [entry for entry in parked if entry[0] is not session]
        if len(remaining) == len(parked):
            return False
        if remaining:
            self._parked[session.target] = remaining
        else:
            del self._parked[session.target]
        return True

    async def _expire(self, session: Session) -> None:
        try:
            await asyncio.sleep(self._idle_timeout)
        except asyncio.CancelledError:
            if self._unpark(session):  # not taken: the loop is shutting down
                session.smtp.close()
            raise
        self._unpark(session)
        _log_idle_closed(session)
        await quit_politely(session.smtp, self._quit_timeout)


def unread_bytes(smtp: aiosmtplib.SMTP) -> int:
    """How many bytes the host sent beyond the last complete reply read.

    Without PIPELINING a host sends exactly one reply per command (RFC 5321
    §4.2), so after a reply nothing may be left. aiosmtplib drops data that
    arrives while no command waits, but keeps what arrives together with a
    reply, and would hand it out as the next command's reply. It has no
    public way to see that buffer; this is the one place that looks.
    """
    protocol = smtp.protocol
    buffer = getattr(protocol, "_buffer", b"") if protocol is not None else b""
    return len(buffer)


async def quit_politely(smtp: aiosmtplib.SMTP, timeout: float) -> None:
    """QUIT politely; close whatever happens (cancellation included)."""
    try:
        if smtp.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await smtp.quit(timeout=min(timeout, 5.0))
    finally:
        smtp.close()


def _log_idle_closed(session: Session) -> None:
    extra = {"host": session.target.host, "address": session.target.address}
    log.debug("smtp.session_idle_closed", extra=extra)
