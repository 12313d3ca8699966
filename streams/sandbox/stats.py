"""Per-host counters of a sandbox SMTP server, for tests and the demo.

The counters are plain attributes mutated only from the event loop thread
that runs the server, so they need no lock; read them from that loop too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["MAIL_FROM_KEPT", "TIMES_KEPT", "HostStats"]

#: How many MAIL FROM senders :attr:`HostStats.mail_from` keeps (the newest).
MAIL_FROM_KEPT = 100

#: How many event times :attr:`HostStats.rcpt_times` and
#: :attr:`HostStats.connection_times` keep each (the newest).
TIMES_KEPT = 100_000

_TIMES = frozenset({"rcpt_times", "connection_times"})


@dataclass(slots=True)
class HostStats:
    """What one sandbox mail host has seen since it started (or :meth:`reset`).

    Attributes:
        connections: TCP connections accepted, including those turned away
            with 421.
        sessions: connections that sent EHLO or HELO.
        rcpts: RCPT commands received, whatever the answer.
        mail_from: the newest MAIL FROM senders ("" for the null sender).
        client_ips: every client address that connected.
        data_commands: DATA commands received (mxprobe must never send one).
        tls_sessions: successful STARTTLS upgrades.
        max_concurrent: the most connections open at the same time.
        rset: RSET commands received.
        open_connections: connections open now.
        quits: QUIT commands received.
        replies_421: 421 replies sent (at the greeting, to any command, or on
            an idle timeout).
        rcpt_times: the server's monotonic clock (seconds) at each RCPT
            command, oldest first; the newest :data:`TIMES_KEPT`.
        connection_times: the server's monotonic clock (seconds) at each
            accepted connection, oldest first; the newest :data:`TIMES_KEPT`.
    """

    connections: int = 0
    sessions: int = 0
    rcpts: int = 0
    mail_from: list[str] = field(default_factory=list)
    client_ips: set[str] = field(default_factory=set)
    data_commands: int = 0
    tls_sessions: int = 0
    max_concurrent: int = 0
    rset: int = 0
    open_connections: int = 0
    quits: int = 0
    replies_421: int = 0
    rcpt_times: list[float] = field(default_factory=list)
    connection_times: list[float] = field(default_factory=list)

    def connection_opened(self, client_ip: str, now: float) -> None:
        """Count a new connection from ``client_ip``, accepted at ``now``."""
        self.connections += 1
        self.client_ips.add(client_ip)
        self.open_connections += 1
        self.max_concurrent = max(self.max_concurrent, self.open_connections)
        _record(self.connection_times, now)

    def connection_closed(self) -> None:
        """Count a connection as closed."""
        self.open_connections = max(0, self.open_connections - 1)

    def rcpt_received(self, now: float) -> None:
        """Count a RCPT command received at ``now``."""
        self.rcpts += 1
        _record(self.rcpt_times, now)

    def sender_seen(self, sender: str) -> None:
        """Remember a MAIL FROM sender, keeping the newest :data:`MAIL_FROM_KEPT`."""
        self.mail_from.append(sender)
        del self.mail_from[:-MAIL_FROM_KEPT]

    def peak(self, times: Sequence[float] | str, window: float) -> int:
        """The most events inside any window of ``window`` seconds (sliding, exact).

        Two events share a window when they are less than ``window`` seconds
        apart, as in the sandbox's own rate limits: a host that admits ``n``
        RCPTs per ``window`` seconds sees a peak of at most ``n``.

        Args:
            times: event times in seconds (any order), or the name of a list
                of them here: ``"rcpt_times"`` or ``"connection_times"``.
            window: the window's length in seconds (positive).

        Raises:
            ValueError: ``window`` is not positive, or ``times`` names no list
                of event times.
        """
        if not window > 0:
            raise ValueError(f"The window must be a positive number of seconds, not {window!r}.")
        if isinstance(times, str):
            if times not in _TIMES:
                names = " or ".join(repr(name) for name in sorted(_TIMES))
                raise ValueError(f"HostStats has no event times called {times!r}; use {names}.")
            named: list[float] = getattr(self, times)
            times = named
        ordered = sorted(times)
        best = first = 0
        for last, moment in enumerate(ordered):
            while moment - ordered[first] >= window:
                first += 1
            best = max(best, last - first + 1)
        return best

    def reset(self) -> None:
        """Zero every counter; connections open now stay counted as open."""
        self.connections = self.sessions = self.rcpts = 0
        self.data_commands = self.tls_sessions = self.rset = 0
        self.quits = self.replies_421 = 0
        self.mail_from.clear()
        self.client_ips.clear()
        self.rcpt_times.clear()
        self.connection_times.clear()
        self.max_concurrent = self.open_connections


def _record(times: list[float], now: float) -> None:
    """Append ``now`` to ``times``, keeping the newest :data:`TIMES_KEPT`."""
    times.append(now)
    if len(times) > TIMES_KEPT:
        del times[: len(times) - TIMES_KEPT]
