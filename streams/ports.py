"""What the verifier needs from the world: DNS, mail hosts, a clock.

:class:`~streams.verifier.Verifier` takes these Protocols, not the adapters
that implement them (:class:`streams.adapters.resolver.Resolver`,
:class:`streams.adapters.smtp_probe.SmtpProber`), so the use case imports no
adapter and its unit tests drive it with in-memory fakes. Every value that
crosses these seams is a core value.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from streams.core.mx import DnsProblem, HostAddresses, MxAnswer
from streams.core.probe import ProbeOutcome
from streams.core.route import Target

__all__ = ["Clock", "MxResolver", "Prober", "Sleep"]

#: Seconds since the epoch, now.
Clock = Callable[[], float]

#: Wait that many seconds (``asyncio.sleep``; a test's fake clock advances instead).
Sleep = Callable[[float], Awaitable[None]]


class MxResolver(Protocol):
    """What the verifier asks DNS (:class:`streams.adapters.resolver.Resolver`)."""

    async def mx(self, domain: str) -> MxAnswer | DnsProblem:
        """The MX records of ``domain`` (ASCII form), or why DNS gave none."""
        ...

    async def addresses(self, host: str) -> HostAddresses | DnsProblem:
        """The A and AAAA addresses of ``host``, or why DNS gave none."""
        ...


class Prober(Protocol):
    """What the verifier asks mail hosts (:class:`streams.adapters.smtp_probe.SmtpProber`)."""

    async def probe(
        self,
        targets: Sequence[Target],
        recipients: Sequence[str],
        *,
        smtputf8: bool,
        max_sessions: int,
        rcpt_per_session: int,
    ) -> ProbeOutcome:
        """One outcome per recipient from the first reachable target, in at most
        ``max_sessions`` new sessions of at most ``rcpt_per_session`` RCPTs."""
        ...

    async def aclose(self) -> None:
        """Close the sessions kept idle for a later probe."""
        ...
