"""What an SMTP probe found out: one outcome per recipient, and what it cost.

The SMTP adapter returns these values (never exceptions for what a server
does, STYLE rule 3); the verifier folds them into verdicts and budgets.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from streams.core.replies import Phase, SmtpReply
from streams.core.route import Target

__all__ = ["ProbeOutcome", "RcptOutcome", "SessionFailure"]


class SessionFailure(enum.StrEnum):
    """Why an SMTP session ended without a reply for a recipient."""

    TIMEOUT = "timeout"
    CONNECTION_FAILED = "connection_failed"  # no mail host could be connected to
    DISCONNECTED = "disconnected"  # the host dropped the connection mid-session
    PROTOCOL_ERROR = "protocol_error"  # unparsable or oversized reply, TLS failure
    DEFERRED = "deferred"  # mxprobe's own budget for the host held the probe back


@dataclass(frozen=True, slots=True)
class RcptOutcome:
    """What happened to one recipient: a reply (with its phase) or a failure."""

    recipient: str
    reply: SmtpReply | None = None
    phase: Phase = Phase.RCPT
    failure: SessionFailure | None = None
    target: Target | None = None
    detail: str = ""
    # Sessions the batch had used when this outcome was known: connections
    # attempted plus idle sessions reused (the verdict's attempts).
    connections: int = 0


@dataclass(slots=True)
class ProbeOutcome:
    """The outcome of every recipient of a batch, and what it cost."""

    results: dict[str, RcptOutcome] = field(default_factory=dict)
    sessions: int = 0  # new sessions in which EHLO succeeded
    connections: int = 0  # TCP connections attempted
    reused: int = 0  # idle sessions taken from an earlier batch

    @property
    def attempts(self) -> int:
        """Sessions used so far: connections attempted plus sessions reused."""
        return self.connections + self.reused
