"""The SMTP probe of one batch as a sans-I/O state machine (h11's ``Connection`` style).

:class:`SessionMachine` is given the mail host's targets and the recipients
of a batch. It hands out one command at a time (:meth:`~SessionMachine.next_command`)
and is told what came of it (:meth:`~SessionMachine.receive`); the commands
and events are in :mod:`streams.core.session_events`. It never waits, reads
a clock or touches a socket, so every branch below is a table test.

The policy it carries out:

- **Reuse first.** A session parked by an earlier batch to one of the
  targets is taken and checked with RSET (which also ends its old
  transaction, RFC 5321 §4.1.1.5). Any other answer than 250 makes it stale:
  QUIT if the host answered, closed if it did not; the next idle one is tried.
- **Connect in order, fail over** (RFC 5321 §5.1): when a connection fails,
  the greeting is not 220, or EHLO and HELO are refused, the next target is
  tried; the last failure is every recipient's outcome when none is left.
  EHLO is retried as HELO unless the host said 421 or hung up (§4.1.4).
  STARTTLS (RFC 3207) is used once, when configured and offered.
- **In a session**, :class:`~streams.core.transactions.Transactions` asks
  the recipients (MAIL, RCPT…, RSET, the null-sender fallback, 452 and 421).
- **Across sessions.** When a session ends after answering some recipients
  (the host dropped it, it is full, or wants fewer per session) the rest go
  to a new one with the same host; at most ``max_sessions`` new sessions in
  all, and each must answer someone, so a batch always ends.
- **Ending a session.** A session that carried what it could is parked
  (unless it is full or the host hung up); one whose replies no longer pair
  with commands (a timeout, a drop, a protocol error) is closed without QUIT;
  every other one is QUIT.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import deque
from collections.abc import Callable, Sequence
from typing import ClassVar

from streams.core.probe import ProbeOutcome, RcptOutcome, SessionFailure
from streams.core.replies import Phase, SmtpReply
from streams.core.route import Target
from streams.core.session_events import (
    Close,
    Command,
    Connect,
    Ehlo,
    Ending,
    Event,
    Failed,
    Finished,
    Helo,
    IdleTaken,
    NoIdle,
    Park,
    Quit,
    Replied,
    Rset,
    StartTls,
    TakeIdle,
    Unsendable,
)
from streams.core.transactions import Ended, SessionOver, Step, Transactions, failure_outcome

__all__ = ["SessionMachine"]

_NO_UTF8 = "The host does not support SMTPUTF8 (RFC 6531), which this address needs."

#: What answers an SMTP command.
Answer = Replied | Failed | Unsendable


class _Wait(enum.Enum):
    """What the command handed out last waits for."""

    NOTHING = enum.auto()  # no command awaits an answer
    IDLE = enum.auto()  # TakeIdle
    CHECK = enum.auto()  # RSET of a session taken from the idle pool
    BANNER = enum.auto()
    EHLO = enum.auto()
    HELO = enum.auto()
    STARTTLS = enum.auto()
    SESSION = enum.auto()  # MAIL, RCPT or RSET of the session's Transactions


class SessionMachine:
    """The session policy of one probe batch: events in, the next command out."""

    def __init__(
        self,
        targets: Sequence[Target],
        recipients: Sequence[str],
        *,
        smtputf8: bool,
        max_sessions: int,
        rcpt_per_session: int,
        rcpt_per_transaction: int,
        mail_from: str | None,
        starttls: bool,
    ) -> None:
        """Start the batch.

        Args:
            targets: the mail host's addresses, in preference order.
            recipients: the addresses to ask about (duplicates are asked once).
            smtputf8: some recipient needs SMTPUTF8 (RFC 6531).
            max_sessions: new sessions this batch may open.
            rcpt_per_session: the most RCPTs one session sends in all (at least 1).
            rcpt_per_transaction: the most RCPTs between MAIL and RSET (at least 1).
            mail_from: the probe sender for hosts that refuse the null sender.
            starttls: upgrade with STARTTLS when the host offers it.
        """
        self._targets = tuple(targets)
        self._pending = list(dict.fromkeys(recipients))
        self._smtputf8 = smtputf8
        self._budget = max_sessions
        self._limit = max(1, rcpt_per_session)
        self._per_transaction = max(1, rcpt_per_transaction)
        self._mail_from = mail_from
        self._starttls = starttls
        self._outcome = ProbeOutcome()
        self._commands: deque[tuple[Command, _Wait]] = deque()
        self._wait = _Wait.NOTHING
        self._index = 0  # the target sessions go to; failover moves it on
        self._connect_at = 0  # the next target to connect to
        self._last_failure = RcptOutcome(
            "", failure=SessionFailure.CONNECTION_FAILED, detail="No targets."
        )
        # The session being greeted, or under way.
        self._target: Target | None = None
        self._extensions: frozenset[str] = frozenset()
        self._open = False  # until the host closes the connection
        self._tls = False
        self._rcpts = 0  # RCPTs a reused session sent before
        self._answered_before = 0
        self._session: Transactions | None = None
        if self._pending:
            self._take_idle()
        else:
            self._finish()

    # ------------------------------------------------------------ the interface

    def next_command(self) -> Command:
        """The command to carry out now.

        :class:`Quit`, :class:`Close` and :class:`Park` need no answer: the
        next call gives the command after them. :class:`Finished` is given
        again on every call.

        Raises:
            RuntimeError: the command handed out last still awaits its event.
        """
        if self._wait is not _Wait.NOTHING:
            raise RuntimeError(f"the machine awaits the answer to {self._wait.name}")
        command, wait = self._commands.popleft()
        if isinstance(command, Finished):
            self._commands.appendleft((command, wait))
        self._wait = wait
        return command

    def receive(self, event: Event) -> None:
        """What came of the command handed out last.

        Raises:
            RuntimeError: no command awaits an answer, or ``event`` cannot
                answer it (a pool event for an SMTP command, or the reverse).
        """
        wait = self._wait
        if wait is _Wait.NOTHING:
            raise RuntimeError(f"no command awaits an answer, yet {event!r} came")
        if isinstance(event, IdleTaken | NoIdle):
            if wait is not _Wait.IDLE:
                raise RuntimeError(f"{event!r} cannot answer {wait.name}")
            self._wait = _Wait.NOTHING
            self._on_idle(event)
            return
        if wait is _Wait.IDLE:
            raise RuntimeError(f"{event!r} cannot answer TakeIdle")
        self._wait = _Wait.NOTHING
        if isinstance(event, Replied) and event.closed:
            self._open = False
        self._HANDLERS[wait](self, event)

    # ------------------------------------------------------------ helpers

    def _emit(self, command: Command, wait: _Wait = _Wait.NOTHING) -> None:
        self._commands.append((command, wait))

    def _here(self) -> Target:
        if self._target is None:  # pragma: no cover - every session has its target
            raise RuntimeError("no session is under way")
        return self._target

    def _outcome_of(self, event: Failed | Unsendable, phase: Phase) -> RcptOutcome:
        return failure_outcome(event, phase, self._here())

    def _fill(self, template: RcptOutcome) -> None:
        """Give every recipient still without an outcome a copy of ``template``."""
        results, attempts = self._outcome.results, self._outcome.attempts
        for recipient in self._pending:
            if recipient not in results:
                results[recipient] = dataclasses.replace(
                    template, recipient=recipient, connections=attempts
                )
        self._finish()

    def _finish(self) -> None:
        self._pending = []
        self._emit(Finished(self._outcome))

    # ------------------------------------------------------------ finding a session

    def _take_idle(self) -> None:
        self._emit(TakeIdle(self._targets[self._index :]), _Wait.IDLE)

    def _on_idle(self, event: IdleTaken | NoIdle) -> None:
        if isinstance(event, IdleTaken):
            if event.target not in self._targets[self._index :]:
                raise RuntimeError(f"{event.target} is not one of the targets asked for")
            self._target, self._rcpts = event.target, event.rcpts
            self._extensions, self._open = event.extensions, True
            self._emit(Rset(), _Wait.CHECK)
        elif self._outcome.sessions >= self._budget:
            detail = (
                f"The host ended {self._outcome.sessions} sessions before answering every "
                "recipient; mxprobe stops there to stay polite."
            )
            self._fill(RcptOutcome("", failure=SessionFailure.DISCONNECTED, detail=detail))
        else:
            self._connect_at = self._index
            self._connect_next()

    def _on_check(self, event: Answer) -> None:
        if isinstance(event, Replied) and event.reply.code == 250:
            self._outcome.reused += 1
            self._begin_session()
            return
        self._emit(Quit(Ending.STALE) if isinstance(event, Replied) else Close(Ending.STALE))
        self._take_idle()

    def _connect_next(self) -> None:
        if self._connect_at >= len(self._targets):
            self._fill(self._last_failure)
            return
        self._target = self._targets[self._connect_at]
        self._connect_at += 1
        self._outcome.connections += 1
        self._open, self._tls, self._rcpts = True, False, 0
        self._emit(Connect(self._target), _Wait.BANNER)

    def _greeting_failed(self, outcome: RcptOutcome, *, answered: bool) -> None:
        """This target cannot be used: QUIT it if it answered (else close), try the next."""
        self._last_failure = outcome
        self._emit(Quit(Ending.FAILOVER) if answered else Close(Ending.FAILOVER))
        self._connect_next()

    def _on_banner(self, event: Answer) -> None:
        if not isinstance(event, Replied):
            self._greeting_failed(self._outcome_of(event, Phase.CONNECT), answered=False)
        elif event.reply.code == 220:
            self._emit(Ehlo(), _Wait.EHLO)
        else:  # aiosmtplib has closed the connection already
            reply = RcptOutcome("", reply=event.reply, phase=Phase.CONNECT, target=self._here())
            self._greeting_failed(reply, answered=False)

    def _on_ehlo(self, event: Answer) -> None:
        if not isinstance(event, Replied):
            self._greeting_failed(self._outcome_of(event, Phase.EHLO), answered=False)
        elif event.reply.code == 250:
            self._greeted(event.extensions)
        elif event.reply.code == 421 or event.closed:
            self._refused_greeting(event.reply)
        else:
            self._emit(Helo(), _Wait.HELO)

    def _on_helo(self, event: Answer) -> None:
        if not isinstance(event, Replied):
            self._greeting_failed(self._outcome_of(event, Phase.EHLO), answered=False)
        elif event.reply.code == 250:
            self._greeted(event.extensions)
        else:
            self._refused_greeting(event.reply)

    def _on_starttls(self, event: Answer) -> None:
        if not isinstance(event, Replied):
            self._greeting_failed(self._outcome_of(event, Phase.EHLO), answered=False)
        elif event.reply.code == 220:
            self._tls = True
            self._emit(Ehlo(), _Wait.EHLO)  # RFC 3207 §4.2: forget what EHLO said before
        else:
            self._refused_greeting(event.reply)

    def _refused_greeting(self, reply: SmtpReply) -> None:
        outcome = RcptOutcome("", reply=reply, phase=Phase.EHLO, target=self._here())
        self._greeting_failed(outcome, answered=True)

    def _greeted(self, extensions: frozenset[str]) -> None:
        self._extensions = extensions
        if self._starttls and not self._tls and "starttls" in extensions:
            self._emit(StartTls(), _Wait.STARTTLS)
            return
        self._outcome.sessions += 1
        self._begin_session()

    # ------------------------------------------------------------ in a session

    def _begin_session(self) -> None:
        target = self._here()
        self._index = self._targets.index(target)  # a reconnect goes back to this host
        results = self._outcome.results
        self._answered_before = len(results)
        queue = [r for r in self._pending if r not in results]
        utf8 = self._smtputf8 and "smtputf8" in self._extensions
        if self._smtputf8 and not utf8:
            for recipient in [r for r in queue if not r.isascii()]:
                results[recipient] = RcptOutcome(
                    recipient, failure=SessionFailure.PROTOCOL_ERROR, target=target, detail=_NO_UTF8
                )
                queue.remove(recipient)
        session = self._session = Transactions(
            target,
            queue,
            rcpts=self._rcpts,
            limit=self._limit,
            per_transaction=self._per_transaction,
            mail_from=self._mail_from,
            utf8=utf8,
            attempts=self._outcome.attempts,
        )
        self._step(session, session.start())

    def _on_session(self, event: Answer) -> None:
        if self._session is None:  # pragma: no cover - SESSION is awaited only in a session
            raise RuntimeError("no session is under way")
        self._step(self._session, self._session.receive(event))

    def _step(self, session: Transactions, step: Step) -> None:
        """Hand out the session's next command, or end it: park, QUIT or close."""
        if not isinstance(step, SessionOver):
            self._emit(step, _Wait.SESSION)
            return
        self._session = None
        self._outcome.results.update(session.results)
        ended = step.ended
        if ended is not None:
            self._emit(Close(Ending.BROKEN) if ended.broken else Quit(Ending.REFUSED))
        elif self._open and session.rcpts < self._limit:
            self._emit(Park(session.rcpts))
        else:
            self._emit(Quit(Ending.DONE))
        self._after_session(ended)

    def _after_session(self, ended: Ended | None) -> None:
        """After a session: finish, fail over, resume in a new session, or give up."""
        results = self._outcome.results
        self._pending = [r for r in self._pending if r not in results]
        if not self._pending:
            self._finish()
            return
        progress = len(results) > self._answered_before
        if (
            not progress
            and (ended is None or ended.failover)
            and self._index + 1 < len(self._targets)
        ):
            self._index += 1  # this host answered nobody: RFC 5321 §5.1, try the next MX
            self._take_idle()
        elif ended is not None and not (ended.resumable and progress):
            self._fill(ended.outcome)
        elif not progress:
            self._fill(
                RcptOutcome(
                    "",
                    failure=SessionFailure.DISCONNECTED,
                    target=self._targets[self._index],
                    detail="The host ended the session before answering any recipient.",
                )
            )
        else:
            self._take_idle()

    _HANDLERS: ClassVar[dict[_Wait, Callable[[SessionMachine, Answer], None]]] = {
        _Wait.CHECK: _on_check,
        _Wait.BANNER: _on_banner,
        _Wait.EHLO: _on_ehlo,
        _Wait.HELO: _on_helo,
        _Wait.STARTTLS: _on_starttls,
        _Wait.SESSION: _on_session,
    }
