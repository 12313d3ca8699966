"""Where mail for a domain goes: the mail hosts' addresses to probe, in order.

A :class:`DomainRoute` is what resolving a domain taught (targets in MX
preference order, or the DNS problem that leaves none), with the times that
bound how long it may be used; a :class:`Target` is one address of one mail
host. Both are plain values: the resolver stage caches routes in its table,
the probe stage carries targets in its events, the SMTP adapter connects to
them.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.core.mx import DnsProblem

__all__ = ["DomainRoute", "Target"]


@dataclass(frozen=True, slots=True)
class Target:
    """One address of one mail host to connect to."""

    host: str
    address: str


@dataclass(frozen=True, slots=True)
class DomainRoute:
    """Where mail for a domain goes: targets in order, or why there are none."""

    targets: tuple[Target, ...] = ()
    problem: DnsProblem | None = None
    expires_at: float = 0.0
    resolved_at: float = 0.0  # when DNS gave this answer (seconds since the epoch)
