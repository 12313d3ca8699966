"""Catch-all state: what a random-recipient reply says, and freshness."""

from __future__ import annotations

import random

import pytest

from streams.core.catchall import (
    CatchAll,
    CatchAllFact,
    freshness_window,
    learn,
    observe,
    random_local_part,
)
from streams.core.probe import RcptOutcome, SessionFailure
from streams.core.replies import Phase, ReplyClass, SmtpReply


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


# --- learn: what a random-recipient probe's outcome teaches -----------------------


@pytest.mark.parametrize(
    ("outcome", "state"),
    [
        (RcptOutcome("x@d.test", SmtpReply(250, "OK", "2.1.5")), CatchAll.ACCEPTS_ALL),
        (
            RcptOutcome("x@d.test", SmtpReply(550, "No such user", "5.1.1")),
            CatchAll.REJECTS_UNKNOWN,
        ),
        # A reply to another step says nothing about unknown recipients.
        (
            RcptOutcome("x@d.test", SmtpReply(550, "Unrouteable address", "5.1.1"), Phase.MAIL),
            CatchAll.UNKNOWN,
        ),
        (RcptOutcome("x@d.test", SmtpReply(250, "OK"), Phase.MAIL), CatchAll.UNKNOWN),
        # No reply at all (timeout, drop): nothing learnt.
        (RcptOutcome("x@d.test", failure=SessionFailure.TIMEOUT), CatchAll.UNKNOWN),
        # A greylisting is no answer either.
        (RcptOutcome("x@d.test", SmtpReply(451, "Try later", "4.7.1")), CatchAll.UNKNOWN),
    ],
)
def test_only_a_reply_to_the_probe_rcpt_teaches(outcome: RcptOutcome, state: CatchAll) -> None:
    """The state is learnt from the probe's RCPT reply alone, stamped with now."""
    learnt = learn(CatchAllFact(), outcome, 100.0)
    assert learnt.state is state
    assert learnt.observed_at == (100.0 if state is not CatchAll.UNKNOWN else 0.0)


def test_an_unclear_probe_keeps_what_was_known() -> None:
    """A probe that timed out leaves an earlier clear answer in place."""
    known = CatchAllFact(CatchAll.ACCEPTS_ALL, 50.0)
    outcome = RcptOutcome("x@d.test", failure=SessionFailure.DISCONNECTED)
    assert learn(known, outcome, 100.0) is known


# --- freshness_window -----------------------------------------------------------


@pytest.mark.parametrize(
    ("max_age", "window"),
    [
        (None, 86_400.0),  # no request bound: the operator's window
        (3600.0, 3600.0),  # a request may ask for fresher facts
        (0.0, 0.0),  # 0: probe anew
        (86_400.0, 86_400.0),
        (172_800.0, 86_400.0),  # never older than the operator allows
    ],
)
def test_freshness_window(max_age: float | None, window: float) -> None:
    """A request's max_age lowers the catch-all window, never raises it."""
    assert freshness_window(max_age, 86_400.0) == window
