"""What a sandbox mail host answers, by behaviour: decisions only, no I/O.

:class:`HostPolicy` turns "a client connected", "EHLO", "MAIL FROM", "RCPT
TO" into :class:`Reply` values; ``smtp_server`` parses the protocol and does
the I/O. Time comes from an injected monotonic clock, so greylisting and rate
windows are exact and testable.

Wording follows the servers it imitates: Postfix for the strict base
(``User unknown in virtual mailbox table``, ``Relay access denied``), postgrey
for greylisting, Spamhaus for the policy block and Gmail for multi-line
replies.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from streams.sandbox.world import Behaviour, Host, World

__all__ = ["MAX_MESSAGE_SIZE", "HostPolicy", "Reply", "SlidingWindow", "TripletGreylist"]

#: The SIZE the hosts advertise (RFC 1870) and enforce on MAIL FROM.
MAX_MESSAGE_SIZE = 10_240_000


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
        return Reply.of(220, f"{name} ESMTP mxprobe-sandbox")

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
        return Reply.of(250, "2.1.5 Ok")

    def _unknown_user(self, recipient: str) -> Reply:
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
