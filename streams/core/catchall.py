"""Catch-all state of a domain on a mail host, and its freshness.

A catch-all ("accept-all") domain answers 250 to RCPT for any local part, so
a 250 for a real address proves nothing. mxprobe learns the state with one
RCPT per domain to a random local part that cannot exist, and keeps what it
learned for a freshness window (the answer changes rarely; probing it for
every address would double the load on the server).
"""

from __future__ import annotations

import enum
import random
import string
from dataclasses import dataclass

from streams.core.probe import RcptOutcome
from streams.core.replies import Phase, ReplyClass, classify

__all__ = [
    "CatchAll",
    "CatchAllFact",
    "freshness_window",
    "learn",
    "observe",
    "random_local_part",
]


class CatchAll(enum.StrEnum):
    """What a domain's mail host does with a recipient that does not exist."""

    UNKNOWN = "unknown"  # never probed, or the probe got no clear answer
    ACCEPTS_ALL = "accepts_all"  # 250/251 for a random local part
    REJECTS_UNKNOWN = "rejects_unknown"  # 5xx naming the mailbox for a random local part


@dataclass(frozen=True, slots=True)
class CatchAllFact:
    """A catch-all state with the time it was learned (seconds since the epoch)."""

    state: CatchAll = CatchAll.UNKNOWN
    observed_at: float = 0.0

    def is_fresh(self, now: float, max_age: float) -> bool:
        """True when the state is known and younger than ``max_age`` seconds."""
        return self.state is not CatchAll.UNKNOWN and 0 <= now - self.observed_at <= max_age


# What the reply to a random, surely nonexistent recipient says about the domain.
_STATE_BY_CLASS: dict[ReplyClass, CatchAll] = {
    ReplyClass.ACCEPTED: CatchAll.ACCEPTS_ALL,
    ReplyClass.CANNOT_VERIFY: CatchAll.ACCEPTS_ALL,
    ReplyClass.MAILBOX_NOT_FOUND: CatchAll.REJECTS_UNKNOWN,
    ReplyClass.MAILBOX_DISABLED: CatchAll.REJECTS_UNKNOWN,
}


def observe(previous: CatchAllFact, reply_class: ReplyClass | None, now: float) -> CatchAllFact:
    """Fold the reply to a random-local-part RCPT into the domain's fact.

    A clear answer replaces the previous fact; an unclear one (4xx, policy,
    timeout: ``reply_class`` of another kind or None) keeps the previous fact
    rather than forgetting what was known.
    """
    state = _STATE_BY_CLASS.get(reply_class) if reply_class is not None else None
    if state is None:
        return previous
    return CatchAllFact(state=state, observed_at=now)


def learn(previous: CatchAllFact, probe: RcptOutcome, now: float) -> CatchAllFact:
    """Fold the outcome of a domain's random-recipient probe into its fact.

    Only a reply to that RCPT itself tells: a reply at an earlier step (the
    greeting, EHLO, MAIL FROM) or no reply at all (a timeout, a drop) says
    nothing about what the host does with unknown recipients, so
    :func:`observe` keeps the previous fact.
    """
    reply = probe.reply if probe.phase is Phase.RCPT else None
    reply_class = classify(reply, Phase.RCPT) if reply is not None else None
    return observe(previous, reply_class, now)


def freshness_window(max_age: float | None, catch_all_max_age: float) -> float:
    """How old (seconds) a catch-all fact may be for a request.

    A request's ``max_age`` may ask for fresher facts (0 = probe anew), never
    for older ones than the operator's ``catch_all_max_age``; without one the
    operator's window holds.
    """
    if max_age is None or max_age > catch_all_max_age:
        return catch_all_max_age
    return max_age


_ALPHABET = string.ascii_lowercase + string.digits


def random_local_part(rng: random.Random, length: int = 20) -> str:
    """A local part no real mailbox has: a letter then ``length - 1`` letters/digits.

    Looks like an ordinary (if odd) local part so servers treat it like any
    other recipient, and has ~100 bits of entropy at the default length.
    """
    first = rng.choice(string.ascii_lowercase)
    return first + "".join(rng.choice(_ALPHABET) for _ in range(length - 1))
