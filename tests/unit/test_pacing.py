"""Pacing a host's pending addresses: the next session's share, the budget's grant,
the waits of those held back, and how long ``check`` waits for them."""

from __future__ import annotations

import pytest

from streams.core.host_state import HostLimits, HostState
from streams.core.pacing import SessionPlan, hold_back, plan_session, wait_inline

NOW = 1_700_000_000.0
SLACK = 1e-3  # what wait_for adds to every wait
# 1 RCPT/s with a burst of 10; connections are plentiful.
LIMITS = HostLimits(rcpt_per_second=1.0, rcpt_burst=10, connections_per_minute=600.0)
EMPTY = HostState(rcpt_tokens=0.0, updated_at=NOW)  # a host whose RCPT bucket is drained


# --- plan_session ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domains", "stale", "limit", "carried", "rcpts", "probed"),
    [
        ([], (), 10, 0, 0, ()),
        (["a", "a", "a"], (), 10, 3, 3, ()),  # fresh domain: 1 RCPT each
        (["a", "a", "a"], ("a",), 10, 3, 4, ("a",)),  # stale: its first address costs 2
        (["a", "b", "a", "b"], ("a", "b"), 10, 4, 6, ("a", "b")),  # one probe per domain
        (["a", "a", "a"], (), 2, 2, 2, ()),  # within rcpt_per_session
        (["a", "b", "c"], ("b",), 3, 2, 3, ("b",)),  # b's probe fills the session
        (["a", "b"], ("b",), 2, 1, 1, ()),  # b and its probe would not fit
        (["a"], ("a",), 1, 1, 2, ("a",)),  # the first address always goes, probe and all
    ],
)
def test_the_next_session_carries_what_fits_in_rcpt_per_session(
    domains: list[str],
    stale: tuple[str, ...],
    limit: int,
    carried: int,
    rcpts: int,
    probed: tuple[str, ...],
) -> None:
    """2 RCPTs for a stale catch-all domain's first address, 1 otherwise, up to the limit."""
    plan = plan_session(domains, frozenset(stale).__contains__, rcpt_per_session=limit)
    assert (plan.size, plan.rcpts, plan.probed) == (carried, rcpts, probed)


@pytest.mark.parametrize(
    ("granted", "size", "probed"),
    [
        (0, 0, ()),  # nothing granted: nothing carried
        (1, 1, ()),  # a fresh first address
        (2, 1, ()),  # b's first address needs 2 with its probe: 1 is not enough
        (3, 2, ("b",)),
        (4, 3, ("b",)),
        (99, 3, ("b",)),  # never more than planned
    ],
)
def test_the_grant_cuts_the_plan_to_its_tokens(
    granted: int, size: int, probed: tuple[str, ...]
) -> None:
    """The session carries the longest start of the plan whose RCPTs were granted."""
    plan = SessionPlan(domains=("a", "b", "b"), probes=(False, True, False))
    cut = plan.within(granted)
    assert (cut.size, cut.probed) == (size, probed)


# --- hold_back ---------------------------------------------------------------------


def test_held_addresses_come_back_at_the_hosts_pace() -> None:
    """At 1 RCPT/s from an empty bucket, the n-th held address waits n seconds."""
    held = hold_back(EMPTY, LIMITS, NOW, count=3)
    assert held.waits == pytest.approx((1 + SLACK, 2 + SLACK, 3 + SLACK))
    assert held.booked == pytest.approx(tuple(NOW + w for w in held.waits))


def test_held_addresses_queue_behind_those_held_before() -> None:
    """Two addresses still to come back: the next held one waits for the third token."""
    held = hold_back(EMPTY, LIMITS, NOW, count=1, booked=(NOW + 1, NOW + 2))
    assert held.waits == pytest.approx((3 + SLACK,))
    assert len(held.booked) == 3


def test_past_bookings_no_longer_count() -> None:
    """An address whose due time passed is no longer ahead in the queue."""
    held = hold_back(EMPTY, LIMITS, NOW, count=1, booked=(NOW - 5, NOW))
    assert held.waits == pytest.approx((1 + SLACK,))
    assert held.booked == pytest.approx((NOW + 1 + SLACK,))


def test_bulk_waits_for_the_tokens_above_the_reserve() -> None:
    """With a quarter of the bucket (2.5 tokens) kept for live, bulk's first waits 3.5 s."""
    held = hold_back(EMPTY, LIMITS, NOW, count=1, reserve=0.25)
    assert held.waits == pytest.approx((3.5 + SLACK,))


# --- wait_inline -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("waits", "elapsed", "size", "waiting", "sleep"),
    [
        ([5.0, 10.0, 15.0], 0.0, 2, (True, True, True), 10.0),  # one session's worth
        ([5.0, 10.0, 15.0], 0.0, 50, (True, True, True), 15.0),  # all fit in one session
        ([5.0, 10.0, 150.0], 0.0, 50, (True, True, False), 10.0),  # beyond max_wait: given up
        ([50.0, 90.0], 60.0, 50, (True, False), 50.0),  # counted from the batch's start
        ([130.0], 0.0, 50, (False,), 0.0),  # nobody waits: no sleep
        ([120.0], 0.0, 50, (True,), 120.0),  # exactly max_wait still waits
    ],
)
def test_check_waits_inline_up_to_max_wait(
    waits: list[float], elapsed: float, size: int, waiting: tuple[bool, ...], sleep: float
) -> None:
    """An address is waited for while the batch's wait stays within max_wait (120 s)."""
    plan = wait_inline(waits, elapsed=elapsed, max_wait=120.0, session_size=size)
    assert (plan.waiting, plan.sleep) == (waiting, sleep)
