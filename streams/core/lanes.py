"""Live before bulk, and how fresh the facts of a batch must be.

Requests come in two lanes: live (the input topic: signups, a user waiting)
and bulk (the bulk topic: imports, replays). Intake serves live traffic
first: while live requests flow, a bulk batch waits, but never longer than
:data:`BULK_MAX_WAIT`, so that bulk is never starved and a rebalance never
waits long for a held batch. (At the mail host, bulk requests also leave a
share of each host's budget to live ones: ``VerifierConfig.bulk_reserve``.)

A request's ``max_age_s`` bounds how old a cached fact (a domain's route, a
catch-all probe) may be for it; requests handled together share one lookup,
so the strictest of them decides.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["BULK_MAX_WAIT", "LIVE_GRACE", "RETRIED_MAX_AGE", "bulk_may_go", "strictest"]

#: Seconds live traffic counts as flowing after its last batch.
LIVE_GRACE = 0.5

#: The most seconds a bulk batch waits for live traffic.
BULK_MAX_WAIT = 5.0

#: A request back from a retry tier trusts no cached fact: what it waited
#: for (a DNS failure to pass, a greylist to open) is only seen by asking anew.
RETRIED_MAX_AGE = 0.0


def bulk_may_go(now: float, *, last_live: float, waiting_since: float) -> bool:
    """Whether a bulk batch held since ``waiting_since`` may go at ``now``.

    Args:
        now: the current time (any clock, the same for all three).
        last_live: when intake last saw a live batch (``-inf``: never).
        waiting_since: when the bulk batch started to wait.
    """
    return now >= min(last_live + LIVE_GRACE, waiting_since + BULK_MAX_WAIT)


def strictest(max_ages: Iterable[float]) -> float:
    """The max age (seconds) a lookup shared by requests must honour: the smallest.

    Raises:
        ValueError: no request at all.
    """
    return min(max_ages)
