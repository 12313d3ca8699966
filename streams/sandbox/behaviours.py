"""What a sandbox mail host answers, by behaviour: decisions only, no I/O.

:class:`HostPolicy` turns "a client connected", "EHLO", "MAIL FROM", "RCPT
TO" into :class:`Reply` values; ``smtp_server`` parses the protocol and does
the I/O. Time comes from an injected monotonic clock, so greylisting and rate
windows are exact and testable.

Wording follows the servers it imitates: Postfix for the strict base
(``User unknown in virtual mailbox table``, ``Relay access denied``), postgrey
for greylisting, Spamhaus for the policy block and Gmail for multi-line
replies.

Hostile hosts send something other than a reply at one step; what they
send is a :data:`Misbehaviour` value, and the verdict a verifier
owes each is in ``hostile.toml``:

===============  ======================================================  ======================
behaviour        what the host sends                                     verdict
===============  ======================================================  ======================
endless_reply    EHLO: ``250-`` lines without end (64 MiB, then close)   unknown/protocol_error
long_line        RCPT: a reply code and 1 MiB of text, then the CRLF     unknown/protocol_error
bad_bytes        banner and RCPT texts with bytes that are not UTF-8     as the codes say
garbage          RCPT: binary bytes where the reply code belongs         unknown/protocol_error
drip             every reply after the banner, one byte a second         unknown/timeout
close_mid_reply  RCPT: the first line of a multi-line reply, then EOF    unknown/disconnected
early_reply      the banner and an extra ``250`` in one write            unknown/protocol_error
silent           nothing: the connection stays open, no banner ever      unknown/timeout
===============  ======================================================  ======================

Long and endless output is produced in chunks of :data:`CHUNK` bytes, so the
sandbox never holds it whole either.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from streams.sandbox.world import World
from streams.sandbox.world_parts import Behaviour, Host

__all__ = [
    "CHUNK",
    "DRIP_INTERVAL",
    "ENDLESS_LIMIT",
    "LONG_LINE_SIZE",
    "MAX_MESSAGE_SIZE",
    "HostPolicy",
    "Misbehaviour",
    "Reply",
    "Silence",
    "SlidingWindow",
    "Stream",
    "Trickle",
    "TripletGreylist",
]

#: The SIZE the hosts advertise (RFC 1870) and enforce on MAIL FROM.
MAX_MESSAGE_SIZE = 10_240_000

#: The most bytes a hostile host builds at once; longer output is sent in pieces.
CHUNK = 64 * 1024

#: The text of a ``long_line`` reply: 1 MiB before its CRLF (RFC 5321 §4.5.3.1.5 allows 512).
LONG_LINE_SIZE = 1024 * 1024

#: Bytes an ``endless_reply`` host sends before it gives up and closes (a client must stop first).
ENDLESS_LIMIT = 64 * 1024 * 1024

#: Seconds between two bytes of a ``drip`` host's replies.
DRIP_INTERVAL = 1.0

# Bytes that are not UTF-8 (a lone continuation byte, bytes never valid in
# UTF-8), written through Reply.encode's surrogateescape.
_NOT_UTF8 = b"\x80\xfe\xff".decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply (RFC 5321 §4.2): a code and one or more text lines.

    Attributes:
        code: the three-digit reply code.
        lines: the text of each line, enhanced status code included.
        close: whether the server closes the connection after sending it.
    """

    code: int
    lines: tuple[str, ...]
    close: bool = False

    @classmethod
    def of(cls, code: int, *lines: str, close: bool = False) -> Reply:
        """Build a reply from its code and text lines."""
        return cls(code, lines or ("",), close)

    def encode(self) -> bytes:
        """The reply on the wire: ``code-text`` lines, then ``code text`` (RFC 5321 §4.2.1)."""
        last = len(self.lines) - 1
        return b"".join(
            f"{self.code}{' ' if i == last else '-'}{line}\r\n".encode("utf-8", "surrogateescape")
            for i, line in enumerate(self.lines)
        )


@dataclass(frozen=True, slots=True)
class Stream:
    """Bytes a hostile host sends in place of a reply: ``head``, ``body`` over and over, ``tail``.

    Attributes:
        head: sent first.
        body: then repeated until ``size`` bytes of it are sent (never built whole).
        size: how many bytes of repeated ``body`` to send.
        tail: sent last.
        close: whether the host closes the connection afterwards.
    """

    head: bytes
    body: bytes = b""
    size: int = 0
    tail: bytes = b""
    close: bool = False

    def chunks(self) -> Iterator[bytes]:
        """The bytes to send, in pieces of about :data:`CHUNK` bytes at most."""
        yield self.head
        if self.body:
            repeat = max(1, CHUNK // len(self.body))
            piece = self.body * repeat
            remaining = self.size
            while remaining > 0:
                yield piece[:remaining]
                remaining -= len(piece)
        if self.tail:
            yield self.tail


@dataclass(frozen=True, slots=True)
class Trickle:
    """A reply sent one byte every ``interval`` seconds; ``close``: then close the connection."""

    data: bytes
    interval: float = DRIP_INTERVAL
    close: bool = False


@dataclass(frozen=True, slots=True)
class Silence:
    """Nothing at all: the host keeps the connection open and never speaks."""


#: What a hostile host does in place of sending a reply.
Misbehaviour = Stream | Trickle | Silence


class SlidingWindow:
    """Counts events per key over the last ``window`` seconds, up to ``limit``."""

    def __init__(self, limit: int | None, window: float) -> None:
        self._limit = limit
        self._window = window
        self._events: dict[str, deque[float]] = {}

    def admit(self, key: str, now: float) -> bool:
        """Record an event for ``key`` unless ``limit`` events are already in the window.

        Refused events are not recorded, so a client gets through again once
        its admitted events have aged out of the window. No limit admits all.
        """
        if self._limit is None:
            return True
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self._window:
            events.popleft()
        if len(events) >= self._limit:
            return False
        events.append(now)
        return True


class TripletGreylist:
    """Greylisting by (client IP, sender, recipient), as postgrey does.

    The first sighting of a triplet is refused, and so is every retry until
    ``delay`` seconds have passed since that first sighting; then the triplet
    passes for good. The oldest triplets are forgotten beyond ``capacity``.
    """

    def __init__(self, delay: float, *, capacity: int = 100_000) -> None:
        self._delay = delay
        self._capacity = capacity
        self._first_seen: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    def passes(self, client_ip: str, sender: str, recipient: str, now: float) -> bool:
        """Whether this attempt of the triplet passes (and remember its first sighting)."""
        triplet = (client_ip, sender.lower(), recipient.lower())
        first = self._first_seen.setdefault(triplet, now)
        if len(self._first_seen) > self._capacity:
            self._first_seen.popitem(last=False)
        return now - first >= self._delay


class HostPolicy:
    """The answers of one sandbox host, following its :class:`Behaviour`.

    Args:
        host: the host answering.
        world: the world, for the domains the host serves and their users.
        clock: a monotonic clock in seconds.
    """

    def __init__(self, host: Host, world: World, *, clock: Callable[[], float]) -> None:
        self.host = host
        self._world = world
        self._clock = clock
        self._connections = SlidingWindow(host.max_connections, host.window)
        self._recipients = SlidingWindow(host.max_rcpt, host.window)
        self._greylist = TripletGreylist(host.greylist_delay)

    @property
    def multiline(self) -> bool:
        """Whether banner, EHLO and RCPT replies span several lines."""
        return self.host.behaviour is Behaviour.MULTILINE

    @property
    def hangs_up_after_rcpt(self) -> bool:
        """Whether the host closes the session after answering its first RCPT."""
        return self.host.behaviour is Behaviour.DISCONNECT_AFTER_RCPT

    def banner(self, client_ip: str) -> Reply:
        """The greeting, or 421 and close when ``client_ip`` has too many connections."""
        name = self.host.name
        if self.host.behaviour is Behaviour.RATE_LIMIT and not self._connections.admit(
            client_ip, self._clock()
        ):
            # RFC 5321 §3.8: a server that must refuse service answers 421 and closes.
            text = f"4.7.0 {name} Too many connections from {client_ip}, try again later"
            return Reply.of(421, text, close=True)
        if self.multiline:
            return Reply.of(
                220,
                f"{name} ESMTP mxprobe-sandbox",
                f"{name} answers in multi-line replies, as large providers do",
            )
        if self.host.behaviour is Behaviour.BAD_BYTES:
            return Reply.of(220, f"{name} ESMTP mxprobe-sandbox {_NOT_UTF8} (not UTF-8)")
        return Reply.of(220, f"{name} ESMTP mxprobe-sandbox")

    def greeting_misbehaviour(self, banner: Reply) -> Misbehaviour | None:
        """What a hostile host sends instead of ``banner``, or None to send it.

        ``early_reply`` appends a reply nobody asked for to the banner, in the
        same write, so a client that pairs replies with commands in order is
        one reply behind from then on (RFC 5321 §4.2: one reply per command).
        """
        behaviour = self.host.behaviour
        if behaviour is Behaviour.SILENT:
            return Silence()
        if behaviour is Behaviour.EARLY_REPLY:
            return Stream(banner.encode() + Reply.of(250, "2.0.0 Ok").encode())
        return None

    def reply_misbehaviour(self, verb: str, reply: Reply) -> Misbehaviour | None:
        """What a hostile host sends instead of ``reply`` to command ``verb``, or None.

        Args:
            verb: the command, upper case (``"EHLO"``, ``"RCPT"``, ...).
            reply: the reply the host would send otherwise.
        """
        behaviour = self.host.behaviour
        if behaviour is Behaviour.DRIP:
            return Trickle(reply.encode(), close=reply.close)
        if behaviour is Behaviour.ENDLESS_REPLY and verb == "EHLO":
            # RFC 5321 §4.2.1: "250-" announces another line; the last is "250 ".
            line = b"250-X-MXPROBE-SANDBOX an extension line that is never the last one\r\n"
            return Stream(f"250-{self.host.name}\r\n".encode(), line, ENDLESS_LIMIT, close=True)
        if verb != "RCPT":
            return None
        if behaviour is Behaviour.LONG_LINE:
            return Stream(f"{reply.code} ".encode(), b"x", LONG_LINE_SIZE, b"\r\n")
        if behaviour is Behaviour.GARBAGE:
            return Stream(b"\xff\xfe\x00\x81 \xc3(not a reply)\r\n")
        if behaviour is Behaviour.CLOSE_MID_REPLY:
            first = f"{reply.code}-{reply.lines[0]}\r\n".encode("utf-8", "surrogateescape")
            return Stream(first, close=True)
        return None

    def ehlo(self, client_ip: str, *, offer_starttls: bool) -> Reply:
        """The EHLO reply with the extensions the host supports (RFC 5321 §4.1.1.1)."""
        first = f"{self.host.name} at your service, [{client_ip}]" if self.multiline else ""
        lines = [first or self.host.name, f"SIZE {MAX_MESSAGE_SIZE}"]
        if offer_starttls:
            lines.append("STARTTLS")  # RFC 3207 §4
        lines += ["ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8"]
        return Reply.of(250, *lines)

    def mail_from(self, sender: str) -> Reply:
        """The reply to a well-formed MAIL FROM (RFC 5321 §4.1.1.2)."""
        if self._refuses_null_sender("mail", sender):
            return Reply.of(550, "5.7.1 <>: Sender address rejected: null sender not accepted here")
        return Reply.of(250, "2.1.0 Ok")

    def _refuses_null_sender(self, phase: str, sender: str) -> bool:
        host = self.host
        return (
            host.behaviour is Behaviour.NULL_SENDER_REFUSED
            and not sender
            and (host.reject_at == phase)
        )

    def rcpt(self, client_ip: str, sender: str, recipient: str) -> Reply:
        """The reply to a well-formed RCPT TO inside a transaction (RFC 5321 §4.1.1.3).

        Args:
            client_ip: the client's address.
            sender: the transaction's MAIL FROM address ("" for the null sender).
            recipient: the address in RCPT TO, without angle brackets.
        """
        behaviour = self.host.behaviour
        now = self._clock()
        if behaviour is Behaviour.RATE_LIMIT and not self._recipients.admit(client_ip, now):
            return Reply.of(
                421, f"4.7.0 Too many recipients from {client_ip}, slow down", close=True
            )
        if behaviour is Behaviour.POLICY_BLOCK:
            return Reply.of(
                554,
                f"5.7.1 Service unavailable; Client host [{client_ip}] blocked using "
                f"zen.spamhaus.org; https://www.spamhaus.org/query/ip/{client_ip}",
            )
        if behaviour is Behaviour.CANNOT_VERIFY:
            text = "2.1.5 Cannot VRFY user, but will accept message and attempt delivery"
            return Reply.of(252, text)
        if self._refuses_null_sender("rcpt", sender):
            # Postfix's smtpd_delay_reject: sender restrictions answer at RCPT.
            return Reply.of(550, "5.7.1 <>: Sender address rejected: null sender not accepted here")
        local, _, domain_name = recipient.rpartition("@")
        domain = self._world.domain(domain_name)
        if domain is None or not domain.served or not self._world.serves(self.host, domain):
            return self._relay_denied(recipient)
        if behaviour is Behaviour.GREYLIST and not self._greylist.passes(
            client_ip, sender, recipient, now
        ):
            return Reply.of(
                450,
                f"4.7.1 <{recipient}>: Recipient address rejected: Greylisted, see "
                f"https://postgrey.schweikert.ch/help/{domain.name}.html",
            )
        if behaviour is Behaviour.CATCH_ALL or domain.knows(local):
            return self._accepted(recipient)
        return self._unknown_user(recipient)

    def _accepted(self, recipient: str) -> Reply:
        if self.multiline:
            return Reply.of(250, "2.1.5 OK", f"2.1.5 <{recipient}> recipient ok - mxprobe-sandbox")
        if self.host.behaviour is Behaviour.BAD_BYTES:
            return Reply.of(250, f"2.1.5 Ok {_NOT_UTF8}")
        return Reply.of(250, "2.1.5 Ok")

    def _unknown_user(self, recipient: str) -> Reply:
        if self.host.behaviour is Behaviour.BAD_BYTES:
            return Reply.of(550, f"5.1.1 <{recipient}> unknown {_NOT_UTF8}")
        if self.multiline:
            return Reply.of(
                550,
                "5.1.1 The email account that you tried to reach does not exist. Please try",
                "5.1.1 double-checking the recipient's email address for typos or",
                "5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser",
            )
        reason = "User unknown in virtual mailbox table"
        return Reply.of(550, f"5.1.1 <{recipient}>: Recipient address rejected: {reason}")

    def _relay_denied(self, recipient: str) -> Reply:
        if self.multiline:
            return Reply.of(
                554,
                f"5.7.1 <{recipient}>: Relay access denied",
                "5.7.1 This host does not accept mail for that domain",
            )
        return Reply.of(554, f"5.7.1 <{recipient}>: Relay access denied")
