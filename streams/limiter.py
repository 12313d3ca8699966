"""The politeness owed to each mail host, carried out: session slots and RCPT budgets.

:class:`HostLimiter` keeps, per mail host, the session slots in use (at most
the host's ``max_sessions`` at once, and ``concurrency`` sessions in all) and
the host's budget state (:class:`~streams.core.host_state.HostState`, in a
store the pipeline backs with its mail-host table). The arithmetic is the
core's (:mod:`streams.core.throttle`, :mod:`streams.core.pacing`); this
module only holds the state between calls and logs the budget's changes.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import MutableMapping, Sequence

from streams.core.host_state import HostLimits, HostState
from streams.core.pacing import SessionPlan, hold_back
from streams.core.politeness import Politeness
from streams.core.probe import RcptOutcome
from streams.core.throttle import probe_signal, settle, take
from streams.ports import Clock

__all__ = ["HostLimiter"]

# The host.* budget lines kept the logger they had before this module was split
# out of the verifier, so that filters on it keep working.
log = logging.getLogger("streams.verifier")


class HostLimiter:
    """Session slots and RCPT budgets per mail host."""

    def __init__(
        self,
        politeness: Politeness,
        hosts: MutableMapping[str, HostState],
        clock: Clock,
        *,
        concurrency: int,
    ) -> None:
        """Keep the hosts' budgets in ``hosts``, by host name.

        Args:
            politeness: the limits of each host.
            hosts: where each host's budget and health are kept.
            clock: seconds since the epoch.
            concurrency: SMTP sessions open at once, to all hosts.
        """
        self._politeness = politeness
        self._hosts = hosts
        self._clock = clock
        #: At most ``concurrency`` sessions in all.
        self.sessions = asyncio.Semaphore(concurrency)
        # Session slots per mail host live only while someone holds or awaits them.
        self._slots: weakref.WeakValueDictionary[str, asyncio.Semaphore] = (
            weakref.WeakValueDictionary()
        )
        # Due times of the addresses held back per (host, bulk), still to come back.
        self._booked: dict[tuple[str, bool], tuple[float, ...]] = {}

    def limits(self, host: str) -> HostLimits:
        """The limits of ``host`` (by provider rule, else the defaults)."""
        return self._politeness.limits_for(host)

    def slots(self, host: str) -> asyncio.Semaphore:
        """The session slots of ``host``: at most its ``max_sessions`` at once."""
        slots = self._slots.get(host)
        if slots is None:
            slots = self._slots[host] = asyncio.Semaphore(self.limits(host).max_sessions)
        return slots

    def grant(self, host: str, plan: SessionPlan, *, now: float, reserve: float) -> SessionPlan:
        """The part of ``plan`` the host's budget grants at ``now`` (its RCPT tokens are taken)."""
        state = self._hosts.get(host, HostState())
        granted, state = take(state, self.limits(host), now, plan.rcpts, reserve=reserve)
        self._hosts[host] = state
        return plan.within(granted)

    def settle(
        self, host: str, outcomes: Sequence[RcptOutcome], *, connections: int, granted_at: float
    ) -> None:
        """Charge the connections a probe opened and adapt the host's budget (AIMD)."""
        state, change = settle(
            self._hosts.get(host, HostState()),
            self.limits(host),
            self._clock(),
            connections=connections,
            signal=probe_signal(outcomes),
            host=host,
            sent_since=granted_at,
        )
        self._hosts[host] = state
        if change is not None:
            extra = {"host": host, "factor": state.factor, "paused_until": state.paused_until}
            log.info("host.%s %s", change.kind, change.message, extra=extra)

    def hold_back(self, host: str, count: int, *, bulk: bool, reserve: float) -> tuple[float, ...]:
        """The waits of ``count`` addresses the budget holds back, queued behind those
        already held back for this host (bulk and live queue apart)."""
        plan = hold_back(
            self._hosts.get(host, HostState()),
            self.limits(host),
            self._clock(),
            count=count,
            booked=self._booked.get((host, bulk), ()),
            reserve=reserve,
        )
        if plan.booked:
            self._booked[(host, bulk)] = plan.booked
        else:
            self._booked.pop((host, bulk), None)
        return plan.waits
