"""MAIL FROM, RCPT TO… and RSET in one open SMTP session, sans I/O.

:class:`Transactions` asks one greeted session about its recipients and says
when the session is over, and why if early (:class:`Ended`);
:class:`~streams.core.session.SessionMachine` runs one per session and
decides what comes after it.

- MAIL FROM:<> first (RFC 5321 §4.5.5: it cannot bounce to anyone); when the
  host refuses the null sender, at MAIL or at RCPT (Postfix defers its MAIL
  checks to RCPT), RSET and the configured probe sender.
- At most ``per_transaction`` RCPTs per transaction, RSET between
  transactions, and ``limit`` RCPTs in the whole session (a reused
  session's earlier ones included).
- A 452 "too many recipients" (§4.5.3.1.10) starts a new transaction for
  the rest, or ends the session (resumable) at a transaction's first RCPT:
  the host wants fewer per session, not per transaction.
- A 421 (§3.8) ends the session; the next MX may be tried.
- A timeout, a drop or a protocol error ends it broken (closed without QUIT);
  a drop lets the rest go to a new session.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from streams.core.probe import RcptOutcome, SessionFailure
from streams.core.replies import Phase, ReplyClass, SmtpReply, classify
from streams.core.route import Target
from streams.core.session_events import Failed, Mail, Rcpt, Replied, Rset, Unsendable

__all__ = ["Ended", "SessionOver", "Step", "Transactions", "failure_outcome"]


@dataclass(frozen=True, slots=True)
class Ended:
    """A session that could not go on; ``outcome`` is every unanswered recipient's.

    ``resumable``: the rest may be asked in a new session to the same host (it
    dropped the connection, or wants fewer recipients per session).
    ``failover``: if nobody was answered yet, the next MX may be tried.
    ``broken``: replies no longer pair with commands: close without QUIT.
    """

    outcome: RcptOutcome
    resumable: bool = False
    failover: bool = False
    broken: bool = False


@dataclass(frozen=True, slots=True)
class SessionOver:
    """The session has nothing more to ask; ``ended`` says why when it ended early."""

    ended: Ended | None = None


Step = Mail | Rset | Rcpt | SessionOver


class _Wait(enum.Enum):
    MAIL = enum.auto()
    RSET = enum.auto()  # between transactions, or before MAIL with the probe sender
    RCPT = enum.auto()


def failure_outcome(event: Failed | Unsendable, phase: Phase, target: Target) -> RcptOutcome:
    """The outcome of the unanswered when ``event`` came at ``phase``."""
    failure = event.failure if isinstance(event, Failed) else SessionFailure.PROTOCOL_ERROR
    return RcptOutcome("", failure=failure, phase=phase, target=target, detail=event.detail)


class Transactions:
    """The MAIL/RCPT transactions of one greeted session.

    ``results`` holds the reply of every recipient answered so far; ``rcpts``
    counts the RCPTs the session has sent; ``open`` is False once the host
    closed the connection.
    """

    def __init__(
        self,
        target: Target,
        recipients: Sequence[str],
        *,
        rcpts: int,
        limit: int,
        per_transaction: int,
        mail_from: str | None,
        utf8: bool,
        attempts: int,
    ) -> None:
        """Prepare to ask ``recipients``; :meth:`start` gives the first step.

        Args:
            target: the address the session talks to.
            recipients: the recipients to ask, in order.
            rcpts: RCPTs the session sent before (a reused session).
            limit: the most RCPTs the session sends in all.
            per_transaction: the most RCPTs between MAIL and RSET.
            mail_from: the probe sender for hosts that refuse the null sender.
            utf8: the host takes SMTPUTF8 and some recipient needs it.
            attempts: sessions the batch has used, for each outcome.
        """
        self.target = target
        self.rcpts = rcpts
        self.open = True
        self.results: dict[str, RcptOutcome] = {}
        self._queue = list(recipients)
        self._limit = limit
        self._per_transaction = per_transaction
        self._mail_from = mail_from
        self._utf8 = utf8
        self._attempts = attempts
        self._null_sender = True  # until the host refuses <>
        self._first_transaction = True
        self._senders: list[str] = []  # senders left to try in this MAIL step
        self._sender = ""
        self._in_transaction = 0  # RCPTs sent in this transaction
        self._wait = _Wait.MAIL

    def start(self) -> Step:
        """The first step: MAIL FROM, or the end when there is nothing to ask."""
        return self._next_transaction()

    def receive(self, event: Replied | Failed | Unsendable) -> Step:
        """The next step after the host's answer to the last one."""
        if isinstance(event, Replied) and event.closed:
            self.open = False
        if not isinstance(event, Replied):
            return self._failed(event)
        if self._wait is _Wait.MAIL:
            return self._on_mail(event.reply)
        if self._wait is _Wait.RSET:
            return self._send_mail() if event.reply.code == 250 else self._refused(event.reply)
        return self._on_rcpt(event.reply)

    def _phase(self) -> Phase:
        return {_Wait.MAIL: Phase.MAIL, _Wait.RSET: Phase.RSET, _Wait.RCPT: Phase.RCPT}[self._wait]

    def _next_transaction(self) -> Step:
        if not self._queue or self.rcpts >= self._limit:
            return SessionOver()
        mail_from = [self._mail_from] if self._mail_from else []
        self._senders = ([""] if self._null_sender else []) + mail_from or [""]
        if self._first_transaction:
            self._first_transaction = False
            return self._send_mail()
        self._wait = _Wait.RSET
        return Rset()

    def _send_mail(self) -> Step:
        self._sender = self._senders.pop(0)
        self._wait = _Wait.MAIL
        return Mail(self._sender, smtputf8=self._utf8)

    def _on_mail(self, reply: SmtpReply) -> Step:
        if reply.code == 250:
            self._null_sender = self._sender == ""
            self._in_transaction = 0
            return self._next_rcpt()
        null_refused = classify(reply, Phase.MAIL) is ReplyClass.NULL_SENDER_REFUSED
        if self._sender == "" and self._senders and null_refused:
            self._wait = _Wait.RSET
            return Rset()  # then MAIL with the probe sender
        return self._refused(reply)

    def _next_rcpt(self) -> Step:
        if not self._queue or self._in_transaction >= self._per_transaction:
            return self._next_transaction()
        if self.rcpts >= self._limit:
            return SessionOver()  # full: the rest go to a new session
        self.rcpts += 1
        self._in_transaction += 1
        self._wait = _Wait.RCPT
        return Rcpt(self._queue[0], smtputf8=self._utf8)

    def _on_rcpt(self, reply: SmtpReply) -> Step:
        reply_class = classify(reply, Phase.RCPT)
        retry_with_probe_sender = (
            reply_class is ReplyClass.NULL_SENDER_REFUSED
            and self._null_sender
            and self._mail_from is not None
        )
        if reply_class is ReplyClass.TOO_MANY_RECIPIENTS and self._in_transaction == 1:
            return SessionOver(Ended(self._unanswered(reply), resumable=True))
        if retry_with_probe_sender or reply_class is ReplyClass.TOO_MANY_RECIPIENTS:
            self._null_sender = self._null_sender and not retry_with_probe_sender
            return self._next_transaction()
        if reply_class is ReplyClass.RATE_LIMITED:  # the rest were not asked
            return SessionOver(Ended(self._unanswered(reply), failover=True))
        recipient = self._queue.pop(0)
        self.results[recipient] = RcptOutcome(
            recipient, reply=reply, target=self.target, connections=self._attempts
        )
        return self._next_rcpt() if self.open else SessionOver()

    def _unanswered(self, reply: SmtpReply) -> RcptOutcome:
        """The outcome of the recipients ``reply`` leaves unanswered."""
        return RcptOutcome("", reply=reply, target=self.target)

    def _refused(self, reply: SmtpReply) -> Step:
        """A refusal before RCPT ends the session; after a 421 the next MX may be tried."""
        phase = self._phase()
        throttled = classify(reply, phase) is ReplyClass.RATE_LIMITED
        outcome = RcptOutcome("", reply=reply, phase=phase, target=self.target)
        return SessionOver(Ended(outcome, failover=throttled))

    def _failed(self, event: Failed | Unsendable) -> Step:
        outcome = failure_outcome(event, self._phase(), self.target)
        if isinstance(event, Unsendable):  # nothing was sent: the session itself is fine
            return SessionOver(Ended(outcome))
        dropped = event.failure is SessionFailure.DISCONNECTED
        return SessionOver(Ended(outcome, resumable=dropped, failover=dropped, broken=True))
