"""Pacing a mail host's pending addresses: what the next session carries, when the rest come back.

The verifier asks a host about its pending addresses session by session.
Right before each session starts, :func:`plan_session` says which addresses
it may carry (its ``rcpt_per_session``, counting each stale catch-all probe)
and so how many RCPT tokens to ask the host's budget for;
:meth:`SessionPlan.within` cuts the plan to what the budget granted. The
addresses the budget holds back get waits from :func:`hold_back`, counted
after the addresses already held back for the host, so that they come back
at the host's pace instead of all at once; ``mxprobe check`` (no retry
topics) waits for them in-process as :func:`wait_inline` says.

Pure: times and the host's state are passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from streams.core.host_state import HostLimits, HostState
from streams.core.throttle import wait_for

__all__ = [
    "HeldBack",
    "InlineWait",
    "SessionPlan",
    "hold_back",
    "plan_session",
    "wait_inline",
]

#: The RCPTs of an address alone, and of one that also carries its domain's
#: catch-all probe (one more RCPT, to a random local part of the domain).
_ALONE, _WITH_PROBE = 1, 2


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """What the next session carries: the first ``len(domains)`` pending addresses.

    ``probes[i]`` is true when the i-th address is the first of a domain
    whose catch-all state is stale: the session adds that domain's probe.
    """

    domains: tuple[str, ...] = ()  # the domain of each address carried, in pending order
    probes: tuple[bool, ...] = ()

    @property
    def size(self) -> int:
        """The number of pending addresses carried."""
        return len(self.domains)

    @property
    def rcpts(self) -> int:
        """The RCPTs the session sends: one per address, one more per catch-all probe."""
        return sum(_WITH_PROBE if probe else _ALONE for probe in self.probes)

    @property
    def probed(self) -> tuple[str, ...]:
        """The domains whose catch-all probe the session adds, in order."""
        return tuple(d for d, probe in zip(self.domains, self.probes, strict=True) if probe)

    def within(self, granted: int) -> SessionPlan:
        """The longest start of this plan whose RCPTs fit in the ``granted`` tokens."""
        size, spent = 0, 0
        for probe in self.probes:
            cost = _WITH_PROBE if probe else _ALONE
            if spent + cost > granted:
                break
            spent += cost
            size += 1
        return SessionPlan(self.domains[:size], self.probes[:size])


def plan_session(
    domains: Iterable[str], stale: Callable[[str], bool], *, rcpt_per_session: int
) -> SessionPlan:
    """The pending addresses the next session may carry, before the budget's grant.

    Addresses are taken in order while their RCPTs fit in
    ``rcpt_per_session``; the first address always goes (a session smaller
    than one address and its probe would never carry it).

    Args:
        domains: the ASCII domain of each pending address, in order.
        stale: whether a domain's catch-all state needs a probe.
        rcpt_per_session: the most RCPTs one session to the host sends.

    Returns:
        The plan; empty only when ``domains`` is.
    """
    carried: list[str] = []
    probes: list[bool] = []
    probed: set[str] = set()
    total = 0
    for domain in domains:
        probe = domain not in probed and stale(domain)
        cost = _WITH_PROBE if probe else _ALONE
        if carried and total + cost > rcpt_per_session:
            break
        if probe:
            probed.add(domain)
        carried.append(domain)
        probes.append(probe)
        total += cost
    return SessionPlan(tuple(carried), tuple(probes))


@dataclass(frozen=True, slots=True)
class HeldBack:
    """The waits of addresses a host's budget held back, and the host's bookings after them."""

    waits: tuple[float, ...]  # seconds from now, one per address held back, in order
    booked: tuple[float, ...]  # due times of every address still to come back to the host


def hold_back(
    state: HostState,
    limits: HostLimits,
    now: float,
    *,
    count: int,
    booked: Sequence[float] = (),
    reserve: float = 0.0,
) -> HeldBack:
    """The waits of ``count`` addresses the host's budget holds back now.

    They queue behind the addresses already held back for the host and not
    yet due (``booked`` due times; past ones are dropped), so the n-th new
    one waits for the bucket to refill for everyone before it
    (:func:`~streams.core.throttle.wait_for`).

    Args:
        state: the host's state, right after its last grant.
        limits: the host's limits.
        now: seconds since the epoch.
        count: the addresses held back now (0: only drop past bookings).
        booked: due times of the addresses held back before.
        reserve: the share of the bucket kept for live traffic (bulk callers).

    Returns:
        The new addresses' waits, and every booking still to come.
    """
    queue = [due for due in booked if due > now]
    waits = tuple(
        wait_for(state, limits, now, position, reserve=reserve)
        for position in range(len(queue) + 1, len(queue) + count + 1)
    )
    return HeldBack(waits=waits, booked=(*queue, *(now + wait for wait in waits)))


@dataclass(frozen=True, slots=True)
class InlineWait:
    """What ``check`` does with the addresses held back from one round of sessions."""

    waiting: tuple[bool, ...]  # per address held back: wait for it (else: give it up)
    sleep: float  # seconds to sleep before the next round (0 when none waits)


def wait_inline(
    waits: Sequence[float], *, elapsed: float, max_wait: float, session_size: int
) -> InlineWait:
    """How ``check`` waits in-process for addresses its host's budget held back.

    An address whose wait would end more than ``max_wait`` seconds after the
    batch started is given up (unknown/throttled); the others are waited for
    in rounds, each long enough for one session's worth of them (the wait of
    the ``session_size``-th).

    Args:
        waits: seconds until each held address may be probed, in order.
        elapsed: seconds since the batch started.
        max_wait: the longest ``check`` waits for one address.
        session_size: the host's recipients per session.
    """
    waiting = tuple(elapsed + wait <= max_wait for wait in waits)
    kept = [wait for wait, keep in zip(waits, waiting, strict=True) if keep]
    sleep = kept[min(len(kept), session_size) - 1] if kept else 0.0
    return InlineWait(waiting=waiting, sleep=sleep)
