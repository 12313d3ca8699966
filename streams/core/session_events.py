"""What goes into and out of the SMTP session machine: events and commands.

:class:`~streams.core.session.SessionMachine` hands out a :data:`Command` at
a time and is told what came of each one that a host (or the idle pool)
answers, as an :data:`Event`. Both are plain frozen values: the adapter
turns a command into aiosmtplib calls and every foreign error into exactly
one event; tests write them by hand.

Commands answered by an event::

    TakeIdle   ->  IdleTaken | NoIdle
    Connect    ->  Replied (the greeting) | Failed
    Ehlo, Helo, StartTls, Mail, Rcpt, Rset  ->  Replied | Failed | Unsendable

Commands that end a session (:class:`Quit`, :class:`Close`, :class:`Park`)
get no answer; :class:`Finished` carries the outcome of every recipient.
There is no DATA: a probe never sends a message.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from streams.core.probe import ProbeOutcome, SessionFailure
from streams.core.replies import SmtpReply
from streams.core.route import Target

__all__ = [
    "Close",
    "Command",
    "Connect",
    "Ehlo",
    "Ending",
    "Event",
    "Failed",
    "Finished",
    "Helo",
    "IdleTaken",
    "Mail",
    "NoIdle",
    "Park",
    "Quit",
    "Rcpt",
    "Replied",
    "Rset",
    "Send",
    "StartTls",
    "TakeIdle",
    "Unsendable",
]


# ---------------------------------------------------------------- events in


@dataclass(frozen=True, slots=True)
class Replied:
    """The host's whole reply to the command, nothing unsolicited after it.

    ``extensions``: the ESMTP keywords the host announced, in lower case
    (meaningful for EHLO). ``closed``: the host closed the connection with
    this reply (RFC 5321 §3.8: a 421 does).
    """

    reply: SmtpReply
    extensions: frozenset[str] = frozenset()
    closed: bool = False


@dataclass(frozen=True, slots=True)
class Failed:
    """The command got no usable reply: a timeout, a drop, a protocol error, no connection.

    Replies can no longer be paired with commands, so the session is over.
    ``detail`` is the sentence that says what the host did.
    """

    failure: SessionFailure
    detail: str


@dataclass(frozen=True, slots=True)
class Unsendable:
    """The command could not be encoded (an address that needs SMTPUTF8); nothing was sent."""

    detail: str


@dataclass(frozen=True, slots=True)
class IdleTaken:
    """The idle pool gave back a session to ``target`` that has sent ``rcpts`` RCPTs."""

    target: Target
    rcpts: int
    extensions: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class NoIdle:
    """The idle pool holds no session to any of the targets asked for."""


Event = Replied | Failed | Unsendable | IdleTaken | NoIdle


# ---------------------------------------------------------------- commands out


class Ending(enum.StrEnum):
    """Why a session is QUIT or closed (for the adapter's log; the machine has decided)."""

    DONE = "done"  # it asked what it could, or is full
    REFUSED = "refused"  # the host refused a step, or wants fewer recipients
    BROKEN = "broken"  # timeout, drop or protocol error: replies no longer pair
    FAILOVER = "failover"  # the greeting failed: the next target is tried
    STALE = "stale"  # an idle session that did not answer RSET with 250


@dataclass(frozen=True, slots=True)
class TakeIdle:
    """Take the newest idle session to the first of ``targets`` that has one."""

    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class Connect:
    """Open a TCP connection to ``target`` and read its greeting."""

    target: Target


@dataclass(frozen=True, slots=True)
class Ehlo:
    """Say EHLO with the configured name."""


@dataclass(frozen=True, slots=True)
class Helo:
    """Say HELO with the configured name (a host that refuses EHLO, RFC 5321 §4.1.4)."""


@dataclass(frozen=True, slots=True)
class StartTls:
    """Send STARTTLS and, on 220, upgrade the connection (RFC 3207)."""


@dataclass(frozen=True, slots=True)
class Mail:
    """MAIL FROM:<sender> (``""``: the null sender), with SMTPUTF8 when ``smtputf8``."""

    sender: str
    smtputf8: bool = False


@dataclass(frozen=True, slots=True)
class Rcpt:
    """RCPT TO:<recipient>, encoded as UTF-8 when ``smtputf8``."""

    recipient: str
    smtputf8: bool = False


@dataclass(frozen=True, slots=True)
class Rset:
    """RSET: end the open transaction (RFC 5321 §4.1.1.5)."""


@dataclass(frozen=True, slots=True)
class Quit:
    """QUIT the session politely and close it (no answer expected)."""

    why: Ending


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection without QUIT, whose reply could not be paired (no answer)."""

    why: Ending


@dataclass(frozen=True, slots=True)
class Park:
    """Keep the session idle for a later batch, having sent ``rcpts`` RCPTs in all.

    If the pool will not keep it (full, closed, bytes unread), QUIT it instead.
    """

    rcpts: int


@dataclass(frozen=True, slots=True)
class Finished:
    """Every recipient has its outcome; the machine has nothing more to do."""

    outcome: ProbeOutcome


#: What the adapter sends to a host (answered by an event).
Send = Connect | Ehlo | Helo | StartTls | Mail | Rcpt | Rset

Command = TakeIdle | Send | Quit | Close | Park | Finished
