"""Catch-all state: what a random-recipient reply says, and freshness."""

from __future__ import annotations

import random

import pytest

from streams.core.catchall import CatchAll, CatchAllFact, observe, random_local_part
from streams.core.replies import ReplyClass


@pytest.mark.parametrize(
    ("reply_class", "state"),
    [
        (ReplyClass.ACCEPTED, CatchAll.ACCEPTS_ALL),
        (ReplyClass.CANNOT_VERIFY, CatchAll.ACCEPTS_ALL),
        (ReplyClass.MAILBOX_NOT_FOUND, CatchAll.REJECTS_UNKNOWN),
        (ReplyClass.MAILBOX_DISABLED, CatchAll.REJECTS_UNKNOWN),
    ],
)
def test_clear_answers_set_the_state(reply_class: ReplyClass, state: CatchAll) -> None:
    """A clear reply to a random recipient decides the state, stamped with now."""
    assert observe(CatchAllFact(), reply_class, 100.0) == CatchAllFact(state, 100.0)


@pytest.mark.parametrize(
    "reply_class",
    [
        None,
        ReplyClass.GREYLISTED,
        ReplyClass.RATE_LIMITED,
        ReplyClass.POLICY_BLOCK,
        ReplyClass.TEMPORARY_FAILURE,
        ReplyClass.PROTOCOL_ERROR,
        ReplyClass.MAILBOX_FULL,
        ReplyClass.PERMANENT_FAILURE,
    ],
)
def test_unclear_answers_keep_what_was_known(reply_class: ReplyClass | None) -> None:
    """A 4xx, a block or a failure does not erase an earlier clear answer."""
    known = CatchAllFact(CatchAll.REJECTS_UNKNOWN, 50.0)
    assert observe(known, reply_class, 100.0) is known


@pytest.mark.parametrize(
    ("fact", "now", "fresh"),
    [
        (CatchAllFact(CatchAll.ACCEPTS_ALL, 1000.0), 1000.0, True),
        (CatchAllFact(CatchAll.ACCEPTS_ALL, 1000.0), 1600.0, True),
        (CatchAllFact(CatchAll.ACCEPTS_ALL, 1000.0), 1601.0, False),
        (CatchAllFact(CatchAll.REJECTS_UNKNOWN, 1000.0), 1200.0, True),
        (CatchAllFact(CatchAll.UNKNOWN, 1000.0), 1000.0, False),  # unknown is never fresh
        (CatchAllFact(CatchAll.ACCEPTS_ALL, 1000.0), 900.0, False),  # clock went backwards
    ],
)
def test_freshness(fact: CatchAllFact, now: float, fresh: bool) -> None:
    """A known state is fresh for max_age seconds."""
    assert fact.is_fresh(now, max_age=600.0) is fresh


def test_random_local_part_shape() -> None:
    """Random local parts start with a letter, are lower-case alphanumerics, and differ."""
    rng = random.Random(7)
    parts = {random_local_part(rng) for _ in range(200)}
    assert len(parts) == 200
    for part in parts:
        assert len(part) == 20 and part[0].isalpha() and part.isalnum() and part == part.lower()
