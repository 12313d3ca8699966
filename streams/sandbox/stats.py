"""Per-host counters of a sandbox SMTP server, for tests and the demo.

The counters are plain attributes mutated only from the event loop thread
that runs the server, so they need no lock; read them from that loop too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["MAIL_FROM_KEPT", "HostStats"]

#: How many MAIL FROM senders :attr:`HostStats.mail_from` keeps (the newest).
MAIL_FROM_KEPT = 100


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

    def connection_opened(self, client_ip: str) -> None:
        """Count a new connection from ``client_ip``."""
        self.connections += 1
        self.client_ips.add(client_ip)
        self.open_connections += 1
        self.max_concurrent = max(self.max_concurrent, self.open_connections)

    def connection_closed(self) -> None:
        """Count a connection as closed."""
        self.open_connections = max(0, self.open_connections - 1)

    def sender_seen(self, sender: str) -> None:
        """Remember a MAIL FROM sender, keeping the newest :data:`MAIL_FROM_KEPT`."""
        self.mail_from.append(sender)
        del self.mail_from[:-MAIL_FROM_KEPT]

    def reset(self) -> None:
        """Zero every counter; connections open now stay counted as open."""
        self.connections = self.sessions = self.rcpts = 0
        self.data_commands = self.tls_sessions = self.rset = 0
        self.mail_from.clear()
        self.client_ips.clear()
        self.max_concurrent = self.open_connections
