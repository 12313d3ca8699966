"""Live before bulk, and the strictest max age of requests that share a lookup."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.lanes import BULK_MAX_WAIT, LIVE_GRACE, bulk_may_go, strictest


@pytest.mark.parametrize(
    ("now", "last_live", "waiting_since", "go"),
    [
        (100.0, -math.inf, 100.0, True),  # no live traffic ever: bulk goes at once
        (100.0, 99.0, 100.0, True),  # live traffic stopped over LIVE_GRACE ago
        (100.0, 99.8, 100.0, False),  # live traffic a moment ago: wait
        (100.0 + LIVE_GRACE, 100.0, 100.0, True),  # the grace passed
        (104.9, 104.8, 100.0, False),  # live keeps flowing, 4.9 s held
        (100.0 + BULK_MAX_WAIT, 105.0, 100.0, True),  # held the most: goes anyway
    ],
)
def test_bulk_waits_for_live_traffic_but_not_forever(
    now: float, last_live: float, waiting_since: float, go: bool
) -> None:
    """A bulk batch goes once live traffic paused for LIVE_GRACE, or after BULK_MAX_WAIT."""
    assert bulk_may_go(now, last_live=last_live, waiting_since=waiting_since) is go


@given(
    start=st.floats(min_value=0, max_value=1e9),
    lives=st.lists(st.floats(min_value=0, max_value=1e6), max_size=50),
)
def test_bulk_is_never_held_past_the_maximum_wait(start: float, lives: list[float]) -> None:
    """However live batches come, a bulk batch may go BULK_MAX_WAIT after it began to wait."""
    for offset in lives:
        assert bulk_may_go(
            start + BULK_MAX_WAIT, last_live=start + offset, waiting_since=start
        )


@pytest.mark.parametrize(
    ("ages", "expected"), [([3600.0], 3600.0), ([3600.0, 0.0, 60.0], 0.0), ([5.0, 7.0], 5.0)]
)
def test_the_strictest_max_age_decides(ages: list[float], expected: float) -> None:
    """Requests sharing one lookup get facts no older than the strictest of them wants."""
    assert strictest(ages) == expected


def test_no_request_has_no_max_age() -> None:
    """strictest() of nothing is a mistake of the caller, not 0 or infinity."""
    with pytest.raises(ValueError):
        strictest([])
