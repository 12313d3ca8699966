"""HostStats, the sandbox's per-host counters: sliding-window peaks, bounded times, reset."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.sandbox.stats import TIMES_KEPT, HostStats


def brute_force_peak(times: list[float], window: float) -> int:
    """The most events in a window (t - window, t] ending at some event t."""
    return max((sum(1 for x in times if 0 <= t - x < window) for t in times), default=0)


@pytest.mark.parametrize(
    ("times", "window", "expected"),
    [
        ([], 1.0, 0),
        ([5.0], 1.0, 1),
        ([0.0, 0.5, 0.99], 1.0, 3),
        ([0.0, 1.0], 1.0, 1),  # exactly one window apart: two windows
        ([0.0, 0.999, 1.998], 1.0, 2),
        ([3.0, 1.0, 2.0, 1.5], 1.0, 2),  # any order
        ([2.0, 2.0, 2.0], 0.001, 3),  # simultaneous events
        ([0.0, 0.1, 0.2, 5.0, 5.1], 1.0, 3),
        ([0.0, 0.1, 0.2, 5.0, 5.1], 10.0, 5),
        ([0.0, 10.0, 20.0, 30.0], 0.5, 1),
    ],
)
def test_peak(times: list[float], window: float, expected: int) -> None:
    """The most events inside any window of the given length."""
    assert HostStats().peak(times, window) == expected


@given(
    st.lists(st.floats(min_value=0, max_value=1_000, allow_nan=False), max_size=60),
    st.floats(min_value=1e-6, max_value=2_000, allow_nan=False),
)
def test_peak_matches_a_brute_force_count(times: list[float], window: float) -> None:
    """peak() agrees with counting every window that ends at an event."""
    assert HostStats().peak(times, window) == brute_force_peak(times, window)


def test_peak_of_a_named_list() -> None:
    """A name picks the host's own event times."""
    stats = HostStats()
    for now in (1.0, 1.2, 1.4, 9.0):
        stats.rcpt_received(now)
    stats.connection_opened("127.0.0.1", 1.0)
    assert stats.peak("rcpt_times", 1.0) == 3
    assert stats.peak("connection_times", 1.0) == 1


@pytest.mark.parametrize(
    ("times", "window", "message"),
    [
        ("rcpts", 1.0, "HostStats has no event times called 'rcpts'"),
        ([1.0], 0.0, "The window must be a positive number of seconds, not 0.0"),
        ([1.0], -1.0, "not -1.0"),
        ([1.0], math.nan, "not nan"),
    ],
)
def test_peak_refuses_bad_arguments(times: list[float] | str, window: float, message: str) -> None:
    """A window that is not positive, or an unknown list name, is a ValueError that says so."""
    with pytest.raises(ValueError, match=message):
        HostStats().peak(times, window)


def test_event_times_keep_the_newest() -> None:
    """RCPT and connection times are bounded to the newest TIMES_KEPT."""
    stats = HostStats()
    extra = 5
    for n in range(TIMES_KEPT + extra):
        stats.rcpt_received(float(n))
        stats.connection_opened("127.0.0.1", float(n))
    for times in (stats.rcpt_times, stats.connection_times):
        assert len(times) == TIMES_KEPT
        assert (times[0], times[-1]) == (float(extra), float(TIMES_KEPT + extra - 1))
    assert stats.rcpts == stats.connections == TIMES_KEPT + extra


def test_reset_clears_the_new_counters() -> None:
    """reset() zeroes QUITs and 421s and forgets event times; open connections stay."""
    stats = HostStats(quits=2, replies_421=3)
    stats.rcpt_received(1.0)
    stats.connection_opened("127.0.0.1", 1.0)
    stats.reset()
    assert (stats.quits, stats.replies_421, stats.rcpts, stats.connections) == (0, 0, 0, 0)
    assert stats.rcpt_times == stats.connection_times == []
    assert stats.open_connections == stats.max_concurrent == 1
