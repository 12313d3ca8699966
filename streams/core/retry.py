"""When to try an address again: retry tiers, attempt limits per cause, a maximum age.

A probe that could not tell (greylisting, a 421, a timeout, a DNS failure,
another 4xx, or mxprobe's own budget for the host) is retried through tiers
of fixed delays (each tier is a topic whose events are due
in the order they arrive, so its consumer only waits for the head). Each
cause has its own attempt limit, and no retry is due later than the
address's first sighting plus ``max_age``; past either, the last reason
stands as an ``unknown`` verdict.

Greylisting (RFC 6647 §2.1) asks the sender to come back after a delay of
minutes, so the first tier is a minute and later ones wait longer.

:func:`plan` is the one decision the pipeline's stages carry out after an
attempt: :class:`Emit` the verdict (final), or :class:`Again` (a retry tier,
a due time, the verdict the request stands on meanwhile).
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from streams.core.mx import TEMPORARY_DNS, DnsProblem
from streams.core.verdict import Reason, Verdict

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_DELAYS",
    "Again",
    "Attempt",
    "Cause",
    "Emit",
    "Retry",
    "RetryPolicy",
    "cause_of",
    "format_attempts",
    "parse_attempts",
    "parse_delays",
    "plan",
]


class Cause(enum.StrEnum):
    """Why a probe is retried; each cause has its own attempt limit."""

    GREYLISTED = "greylisted"  # 450/451 4.7.x or greylist wording (Reason.GREYLISTED)
    THROTTLED = "throttled"  # 421, rate-limit replies (Reason.THROTTLED)
    TIMEOUT = "timeout"  # connection/command timeouts (Reason.TIMEOUT)
    DNS = "dns"  # SERVFAIL / DNS timeout at resolution (Reason.DNS_ERROR)
    TEMPORARY = "temporary"  # other 4xx (Reason.TEMPORARY_FAILURE)
    BUDGET = "budget"  # mxprobe's own host budget or breaker deferred the probe


# Only these reasons are worth another try. CONNECTION_FAILED is not: a host
# with nothing listening on port 25 stays that way for minutes, and the
# verdict (unknown/connection_failed) says as much at once. DISCONNECTED and
# PROTOCOL_ERROR describe the host's software, which a retry does not change;
# every 5xx and every DNS fact is final.
_CAUSE_OF_REASON: Mapping[Reason, Cause] = MappingProxyType(
    {
        Reason.GREYLISTED: Cause.GREYLISTED,
        Reason.THROTTLED: Cause.THROTTLED,
        Reason.TIMEOUT: Cause.TIMEOUT,
        Reason.DNS_ERROR: Cause.DNS,
        Reason.TEMPORARY_FAILURE: Cause.TEMPORARY,
    }
)


def cause_of(reason: Reason) -> Cause | None:
    """The retry cause of a verdict reason, or None when the verdict is final.

    GREYLISTED, THROTTLED, TIMEOUT, DNS_ERROR and TEMPORARY_FAILURE are
    retried; everything else, CONNECTION_FAILED included, is final.
    (:attr:`Cause.BUDGET` has no reason: the caller knows it deferred.)
    """
    return _CAUSE_OF_REASON.get(reason)


#: Attempt limits per cause: retries after the first attempt.
DEFAULT_ATTEMPTS: Mapping[Cause, int] = MappingProxyType(
    {
        Cause.GREYLISTED: 4,  # greylisting lets the sender through within minutes
        Cause.THROTTLED: 3,
        Cause.TIMEOUT: 2,
        Cause.DNS: 3,
        Cause.TEMPORARY: 2,
        Cause.BUDGET: 100,  # our own pacing: the max age ends it, not the count
    }
)

#: Seconds of delay of each tier (production; tests use seconds).
DEFAULT_DELAYS: tuple[float, ...] = (60.0, 300.0, 900.0, 1800.0)


@dataclass(frozen=True, slots=True)
class Retry:
    """When to try again, and through which tier."""

    tier: int  # index into RetryPolicy.delays (the tier topic)
    due_at: float  # seconds since the epoch


def _default_attempts() -> Mapping[Cause, int]:
    return DEFAULT_ATTEMPTS


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry tiers, attempt limits per cause, and the maximum age of a retry.

    ``attempts`` may name only some causes: the others keep
    :data:`DEFAULT_ATTEMPTS`.

    Raises:
        ValueError: a delay, an attempt limit or the maximum age is out of
            range (a sentence naming it).
    """

    delays: tuple[float, ...] = DEFAULT_DELAYS  # non-empty, each > 0, non-decreasing
    attempts: Mapping[Cause, int] = field(default_factory=_default_attempts)
    max_age: float = 7200.0  # no retry due later than first_seen + max_age

    def __post_init__(self) -> None:
        _check_delays(self.delays)
        if not (math.isfinite(self.max_age) and self.max_age > 0):
            raise ValueError(
                f"The retry max age must be a number of seconds above 0, not {self.max_age!r}."
            )
        merged = dict(DEFAULT_ATTEMPTS)
        for cause, limit in self.attempts.items():
            merged[_cause(str(cause))] = _attempt_limit(cause, limit)
        # Frozen: the validated, complete copy replaces what was given.
        object.__setattr__(self, "delays", tuple(float(delay) for delay in self.delays))
        object.__setattr__(self, "attempts", MappingProxyType(merged))

    def after(self, cause: Cause, done: int, first_seen: float, now: float) -> Retry | None:
        """The next retry after the ``done``-th retry for ``cause`` failed.

        ``done = 0``: the first attempt failed. The tier is ``done`` (the
        last tier once past it), due its delay after ``now``.

        Args:
            cause: Why the attempt could not tell.
            done: Retries already made (0 or more).
            first_seen: When the address was first seen (epoch seconds).
            now: Seconds since the epoch.

        Returns:
            The retry, or None when ``done`` reached the cause's attempt limit
            or the retry would be due after ``first_seen + max_age``.

        Raises:
            ValueError: ``done`` is negative.
        """
        if not self._may_retry(cause, done):
            return None
        tier = min(done, len(self.delays) - 1)
        return self._within_age(Retry(tier, now + self.delays[tier]), first_seen)

    def defer(self, wait: float, done: int, first_seen: float, now: float) -> Retry | None:
        """A :attr:`Cause.BUDGET` retry ``wait`` seconds from now.

        ``wait`` comes from :func:`streams.core.throttle.wait_for`: the budget
        knows when the host can take the probe, so the retry is due then, not
        after the tier's delay. The tier is the first whose delay is at least
        ``wait`` (else the last), so the tier's consumer never holds it back
        longer than the tier's own delay.

        Args:
            wait: Seconds until the host's budget can take the probe (0 or more).
            done: Retries already made (0 or more).
            first_seen: When the address was first seen (epoch seconds).
            now: Seconds since the epoch.

        Returns:
            The retry, or None when ``done`` reached the BUDGET attempt limit
            or the retry would be due after ``first_seen + max_age``.

        Raises:
            ValueError: ``wait`` is negative or not finite, or ``done`` is negative.
        """
        if not (math.isfinite(wait) and wait >= 0):
            raise ValueError(f"wait must be a number of seconds, 0 or more, not {wait!r}.")
        if not self._may_retry(Cause.BUDGET, done):
            return None
        tier = next(
            (index for index, delay in enumerate(self.delays) if delay >= wait),
            len(self.delays) - 1,
        )
        return self._within_age(Retry(tier, now + wait), first_seen)

    def _may_retry(self, cause: Cause, done: int) -> bool:
        if done < 0:
            raise ValueError(f"done counts retries already made, 0 or more, not {done}.")
        return done < self.attempts[cause]

    def _within_age(self, retry: Retry, first_seen: float) -> Retry | None:
        return retry if retry.due_at <= first_seen + self.max_age else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """What one attempt at a request found, and what came before it.

    Exactly one of three kinds: a probe's verdict (``dns`` and
    ``deferred_for`` unset); a DNS answer that leaves no mail host to probe
    (``dns`` set, ``verdict`` is its DNS verdict); or a probe the mail host's
    budget held back (``deferred_for`` set, ``verdict`` is what the request
    stands on: the previous attempt's verdict, or unknown/throttled).
    """

    verdict: Verdict
    retries: Mapping[str, int] = field(default_factory=dict)  # scheduled so far, per cause
    first_seen: float  # when intake first read the request (epoch seconds)
    earlier_sessions: int = 0  # SMTP sessions of the earlier attempts
    dns: DnsProblem | None = None
    deferred_for: float | None = None  # seconds until the host's budget can take it


@dataclass(frozen=True, slots=True)
class Emit:
    """The request's verdict is final: send it."""

    verdict: Verdict


@dataclass(frozen=True, slots=True, kw_only=True)
class Again:
    """Try the request again through a retry tier.

    ``verdict`` is what the request stands on meanwhile (and its verdict if
    no later attempt tells more); ``retries`` the counts per cause with this
    one; ``new_round`` says a probe round was spent (a deferral spends none).
    """

    cause: Cause
    tier: int
    due_at: float
    verdict: Verdict
    retries: Mapping[str, int]
    new_round: bool


def plan(policy: RetryPolicy, attempt: Attempt, now: float) -> Emit | Again:
    """After an attempt: the final verdict, or the next try.

    - A deferral (the host's budget held the probe back) is retried when the
      budget allows (:meth:`RetryPolicy.defer`), counted as :attr:`Cause.BUDGET`.
    - A DNS answer is retried only when it may be gone next time
      (:data:`TEMPORARY_DNS`: SERVFAIL, timeout), as :attr:`Cause.DNS`;
      NXDOMAIN, null MX and the like are facts.
    - A probe's verdict is retried when its reason has a cause
      (:func:`cause_of`: greylisted, throttled, timeout, another 4xx); its
      evidence counts the SMTP sessions of every attempt so far.

    Past a cause's attempt limit or the policy's maximum age, the verdict
    stands: :class:`Emit`.
    """
    verdict = attempt.verdict
    if attempt.deferred_for is not None:
        cause: Cause | None = Cause.BUDGET
        done = attempt.retries.get(Cause.BUDGET.value, 0)
        retry = policy.defer(attempt.deferred_for, done, attempt.first_seen, now)
    else:
        if attempt.dns is not None:
            cause = Cause.DNS if attempt.dns in TEMPORARY_DNS else None
        else:
            if attempt.earlier_sessions:  # a first attempt's evidence is already whole
                sessions = verdict.evidence.attempts + attempt.earlier_sessions
                evidence = dataclasses.replace(verdict.evidence, attempts=sessions)
                verdict = dataclasses.replace(verdict, evidence=evidence)
            cause = cause_of(verdict.reason)
        done = attempt.retries.get(cause.value, 0) if cause is not None else 0
        retry = policy.after(cause, done, attempt.first_seen, now) if cause is not None else None
    if cause is None or retry is None:
        return Emit(verdict)
    retries = {**attempt.retries, cause.value: done + 1}
    return Again(
        cause=cause,
        tier=retry.tier,
        due_at=retry.due_at,
        verdict=verdict,
        retries=retries,
        new_round=cause is not Cause.BUDGET,
    )


def _check_delays(delays: tuple[float, ...]) -> None:
    if not delays:
        raise ValueError("Give at least one retry delay, e.g. 60,300,900,1800 (seconds).")
    for delay in delays:
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise ValueError(f"The retry delay {delay!r} is not a number of seconds.")
        if not (math.isfinite(delay) and delay > 0):
            raise ValueError(f"The retry delay {delay!r} must be a number of seconds above 0.")
    for shorter, longer in itertools.pairwise(delays):
        if longer < shorter:
            raise ValueError(
                f"The retry delays must not decrease ({shorter:g} then {longer:g}); "
                "list each tier's delay in increasing order, e.g. 60,300,900,1800."
            )


def _cause(name: str) -> Cause:
    try:
        return Cause(name)
    except ValueError:
        known = ", ".join(cause.value for cause in Cause)
        raise ValueError(f"{name!r} is not a retry cause; use one of {known}.") from None


def _attempt_limit(cause: object, limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(
            f"The attempt limit for {cause} must be a whole number, 0 or more, not {limit!r}."
        )
    return limit


_SEPARATORS = re.compile(r"[\s,]+")
_AROUND_EQUALS = re.compile(r"\s*=\s*")


def parse_delays(text: str) -> tuple[float, ...]:
    """The tier delays in ``text``: seconds separated by commas or blanks.

    ``"60,300,900,1800"`` and ``"1 2 5"`` are both accepted.

    Raises:
        ValueError: an entry is not a positive number, the delays decrease,
            or there are none.
    """
    delays: list[float] = []
    for entry in filter(None, _SEPARATORS.split(text.strip())):
        try:
            delays.append(float(entry))
        except ValueError:
            raise ValueError(
                f"The retry delay {entry!r} is not a number of seconds; "
                "write the delays like 60,300,900,1800."
            ) from None
    delays_tuple = tuple(delays)
    _check_delays(delays_tuple)
    return delays_tuple


def parse_attempts(text: str) -> dict[Cause, int]:
    """Attempt limits over the defaults, from ``"greylisted=5,timeout=1"``.

    Entries are separated by commas or blanks; an empty text overrides
    nothing.

    Raises:
        ValueError: an entry is not ``cause=number``, names an unknown
            cause, repeats a cause, or gives a negative or fractional number.
    """
    limits: dict[Cause, int] = {}
    for entry in filter(None, _SEPARATORS.split(_AROUND_EQUALS.sub("=", text.strip()))):
        name, equals, value = entry.partition("=")
        if not equals or not name or not value:
            raise ValueError(
                f"The attempt limit {entry!r} is not cause=number; write e.g. greylisted=5."
            )
        cause = _cause(name.strip().lower())
        if cause in limits:
            raise ValueError(f"The attempt limit for {cause} is given twice; keep one.")
        if not (value.isascii() and value.isdigit()):
            raise ValueError(
                f"The attempt limit for {cause} must be a whole number, 0 or more, not {value!r}."
            )
        limits[cause] = int(value)
    return limits


def format_attempts(limits: Mapping[Cause, int]) -> str:
    """``limits`` as :func:`parse_attempts` reads them: ``"greylisted=4,throttled=3"``."""
    return ",".join(f"{cause.value}={limit}" for cause, limit in limits.items())
