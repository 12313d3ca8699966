"""Politeness owed to each mail host: token budgets, AIMD and a circuit breaker.

Each mail host has two token buckets (politeness is owed to the server,
not the domain: thousands of domains may share one exchange): one for RCPT commands and one for new
connections. :func:`take` refills them to ``now`` and grants recipients;
:func:`settle` charges the connections a probe opened and adapts the budget
to how the host answered:

- a throttling reply (421, a rate-limit or too-many-recipients reply) or a
  burst of refused connections multiplies the host's ``factor`` by
  ``decrease``; each clean session adds ``increase`` back, up to 1 (AIMD, as
  TCP congestion control does, RFC 5681 §3.1);
- ``failure_threshold`` failed sessions in a row open the breaker: the host is
  paused for a cool-down, which doubles on each re-trip. After the pause one
  trial session decides: a clean answer resumes the host, a failure re-trips.

The guarantee: over any window of ``T`` seconds a host gets at most
``rcpt_burst + rcpt_per_second × T`` RCPTs (:meth:`HostLimits.ceiling`),
whatever the sequence of calls, because the factor never exceeds 1 and the
bucket never holds more than its capacity.

:class:`~streams.core.politeness.Politeness` picks the limits of a host
from provider rules (the packaged ``data/politeness.toml``, and the
operator's own file on top).

Everything here is arithmetic on values with ``now`` passed in: no clock.
The values it works on, :class:`~streams.core.host_state.HostLimits` and
:class:`~streams.core.host_state.HostState`, are in :mod:`streams.core.host_state`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from streams.core.host_state import HostLimits, HostState
from streams.core.probe import RcptOutcome, SessionFailure
from streams.core.replies import ReplyClass, classify

__all__ = [
    "Change",
    "Signal",
    "probe_signal",
    "settle",
    "signal_of",
    "take",
    "wait_for",
]

# wait_for adds this much (seconds) so that float rounding of "now + wait"
# never leaves the bucket a hair short of the tokens it promised.
_SLACK = 1e-3


class Signal(enum.StrEnum):
    """What one probe of a host says about its budget (see :func:`signal_of`)."""

    CLEAN = "clean"  # the host answered recipients, no throttling
    THROTTLED = "throttled"  # a 421, a rate-limit or too-many-recipients reply
    REFUSED = "refused"  # connections refused/failed to every target
    FAILED = "failed"  # timeouts, drops, protocol errors with no answer at all
    NONE = "none"  # nothing was tried (e.g. zero recipients granted): no change


@dataclass(frozen=True, slots=True)
class Change:
    """A change worth a log line: kind in {"decrease", "increase", "pause", "resume"}."""

    kind: str
    message: str  # a sentence, e.g. "mx.example.test: budget cut to 50% after a throttle."
    factor: float = 1.0  # the factor after the change
    paused_until: float = 0.0  # the breaker's end after the change (0: not paused)


# --- the buckets ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Budget:
    """The effective rates (per second) and capacities at a host's current factor."""

    rcpt_rate: float
    rcpt_capacity: float
    connection_rate: float
    connection_capacity: float

    @classmethod
    def of(cls, limits: HostLimits, factor: float) -> _Budget:
        # Capacities stay at least 1: a bucket that can never hold one token
        # would never grant anything, however long one waits.
        return cls(
            rcpt_rate=limits.rcpt_per_second * factor,
            rcpt_capacity=max(1.0, limits.rcpt_burst * factor),
            connection_rate=limits.connections_per_minute / 60.0 * factor,
            connection_capacity=max(1.0, limits.connection_burst * factor),
        )

    def reserved(self, reserve: float) -> float:
        """RCPT tokens kept for live traffic; at least one token stays grantable to bulk."""
        return min(reserve * self.rcpt_capacity, self.rcpt_capacity - 1.0)


def _clamp_factor(factor: float, limits: HostLimits) -> float:
    return min(1.0, max(limits.min_factor, factor))


def _level(tokens: float | None, rate: float, capacity: float, elapsed: float) -> float:
    if tokens is None:
        return capacity
    return min(capacity, tokens + rate * elapsed)


def _refill(state: HostState, limits: HostLimits, now: float) -> tuple[HostState, _Budget]:
    """``state`` with both buckets refilled to ``now`` (a clock going back refills nothing)."""
    factor = _clamp_factor(state.factor, limits)
    budget = _Budget.of(limits, factor)
    elapsed = max(0.0, now - state.updated_at)
    refilled = dataclasses.replace(
        state,
        factor=factor,
        rcpt_tokens=_level(state.rcpt_tokens, budget.rcpt_rate, budget.rcpt_capacity, elapsed),
        connection_tokens=_level(
            state.connection_tokens, budget.connection_rate, budget.connection_capacity, elapsed
        ),
        updated_at=max(state.updated_at, now),
    )
    return refilled, budget


def _grantable(refilled: HostState, budget: _Budget, now: float, reserve: float) -> int:
    """How many RCPTs a refilled host may be given now."""
    assert refilled.rcpt_tokens is not None and refilled.connection_tokens is not None
    if refilled.paused(now) or refilled.connection_tokens < 1.0:
        return 0
    return max(0, math.floor(refilled.rcpt_tokens - budget.reserved(reserve)))


def _check_reserve(reserve: float) -> None:
    if not 0.0 <= reserve < 1.0:
        raise ValueError(f"reserve must be at least 0 and below 1, not {reserve!r}.")


def take(
    state: HostState, limits: HostLimits, now: float, want: int, *, reserve: float = 0.0
) -> tuple[int, HostState]:
    """Refill the buckets to ``now`` and grant up to ``want`` RCPTs.

    Grants 0 while the breaker is open or while the connection bucket holds
    less than 1 token (a session needs a connection). Effective rate and
    capacity are the limits times ``state.factor`` (capacity at least 1).
    Granted tokens are removed from the RCPT bucket; the caller splits them
    into sessions of at most ``limits.rcpt_per_session`` and charges the
    connections it opens with :func:`settle`.

    Args:
        state: The host's state.
        limits: The host's limits.
        now: Seconds since the epoch.
        want: RCPTs asked for (0 or less grants nothing).
        reserve: In [0, 1): the fraction of the RCPT bucket's capacity kept
            for live traffic. Bulk callers pass e.g. 0.25 and get only the
            tokens above it (at least one token above it is always possible).

    Returns:
        The RCPTs granted, and the new state.

    Raises:
        ValueError: ``reserve`` is outside [0, 1).
    """
    _check_reserve(reserve)
    refilled, budget = _refill(state, limits, now)
    granted = min(max(want, 0), _grantable(refilled, budget, now, reserve))
    assert refilled.rcpt_tokens is not None
    return granted, dataclasses.replace(
        refilled, rcpt_tokens=refilled.rcpt_tokens - granted, rcpts=refilled.rcpts + granted
    )


def wait_for(
    state: HostState, limits: HostLimits, now: float, n: int, *, reserve: float = 0.0
) -> float:
    """Seconds from ``now`` until ``n`` more RCPTs and a connection could be granted.

    "More" counts beyond what :func:`take` could grant at ``now``: the
    ``n``-th recipient held back gets the time at which the bucket has
    refilled for it and the ``n - 1`` before it, so deferred recipients
    come back spread at the host's rate. The remaining pause counts when
    the breaker is open. A :func:`take` of ``n`` at ``now`` plus this wait
    (with nothing else taken) grants ``n``, when ``n`` fits in the bucket
    above the reserve.

    Args:
        state: The host's state (typically right after a :func:`take`).
        limits: The host's limits.
        now: Seconds since the epoch.
        n: The position of the held-back recipient, from 1.
        reserve: As for :func:`take`.

    Returns:
        The wait in seconds; always above 0 and finite.

    Raises:
        ValueError: ``n`` is below 1 or ``reserve`` is outside [0, 1).
    """
    _check_reserve(reserve)
    if n < 1:
        raise ValueError(f"n counts held-back recipients from 1, not {n!r}.")
    refilled, budget = _refill(state, limits, now)
    assert refilled.rcpt_tokens is not None and refilled.connection_tokens is not None
    target = budget.reserved(reserve) + _grantable(refilled, budget, now, reserve) + n
    # Refills start at updated_at, which a clock gone backwards puts after now.
    lag = refilled.updated_at - now
    rcpt_wait = _refill_time(target - refilled.rcpt_tokens, budget.rcpt_rate, lag)
    connection_wait = _refill_time(1.0 - refilled.connection_tokens, budget.connection_rate, lag)
    pause_wait = max(0.0, refilled.paused_until - now)
    return max(rcpt_wait, connection_wait, pause_wait) + _SLACK


def _refill_time(missing: float, rate: float, lag: float) -> float:
    """Seconds until a bucket refilling at ``rate`` after ``lag`` seconds gains ``missing``."""
    return 0.0 if missing <= 0 else lag + missing / rate


# --- adapting to the host's answers ----------------------------------------------

_THROTTLING = frozenset({ReplyClass.RATE_LIMITED, ReplyClass.TOO_MANY_RECIPIENTS})
# A failure not listed here (DEFERRED: mxprobe held the probe back) tried nothing.
_FAILURE_SIGNALS: Mapping[SessionFailure, Signal] = {
    SessionFailure.CONNECTION_FAILED: Signal.REFUSED,
    SessionFailure.TIMEOUT: Signal.FAILED,
    SessionFailure.DISCONNECTED: Signal.FAILED,
    SessionFailure.PROTOCOL_ERROR: Signal.FAILED,
}


def signal_of(answers: Iterable[tuple[ReplyClass | None, SessionFailure | None]]) -> Signal:
    """The signal of one probe from each recipient's (reply class, failure).

    Any RATE_LIMITED or TOO_MANY_RECIPIENTS reply → THROTTLED; otherwise any
    reply at all → CLEAN (a greylisting or a 550 is a host answering);
    otherwise every failure CONNECTION_FAILED → REFUSED; otherwise
    (timeouts, drops, protocol errors) → FAILED. Nothing tried (no answers,
    or only recipients mxprobe held back) → NONE.
    """
    replies: list[ReplyClass] = []
    failures: list[Signal] = []
    for reply_class, failure in answers:
        if reply_class is not None:
            replies.append(reply_class)
        elif failure is not None and failure in _FAILURE_SIGNALS:
            failures.append(_FAILURE_SIGNALS[failure])
    if any(reply_class in _THROTTLING for reply_class in replies):
        return Signal.THROTTLED
    if replies:
        return Signal.CLEAN
    if not failures:
        return Signal.NONE
    if all(signal is Signal.REFUSED for signal in failures):
        return Signal.REFUSED
    return Signal.FAILED


def probe_signal(outcomes: Iterable[RcptOutcome]) -> Signal:
    """The signal of one probe from its recipients' outcomes (see :func:`signal_of`).

    Each reply is classified at the step it answered (a 421 greeting is a
    throttle as much as a 421 to RCPT).
    """
    return signal_of(
        (classify(rcpt.reply, rcpt.phase) if rcpt.reply is not None else None, rcpt.failure)
        for rcpt in outcomes
    )


_CUT_BECAUSE: Mapping[Signal, str] = {
    Signal.THROTTLED: "a throttling reply (421 or a rate limit)",
    Signal.REFUSED: "refused connections",
}


def settle(
    state: HostState,
    limits: HostLimits,
    now: float,
    *,
    connections: int,
    signal: Signal,
    host: str = "mail host",
    sent_since: float | None = None,
) -> tuple[HostState, Change | None]:
    """Charge the connections a probe opened and adapt the budget to its signal.

    ``sent_since`` (the time the probe's RCPTs were granted): the RCPT tokens
    that would have refilled while the probe was sending are not credited.
    A grant is sent over the whole session, not at once, so crediting them
    would let the next grant's RCPTs land in the same second as the last of
    this one's; forfeiting them makes the host see, at the send times, no
    more than the bucket allows (exactly so for one session at a time).

    The connection bucket may go negative: a debt that delays the next grant.
    THROTTLED and REFUSED cut the factor (``factor × decrease``, not below
    ``min_factor``; THROTTLED also counts in ``throttles``) and count as a
    failure; FAILED is a failure; CLEAN raises the factor by ``increase`` (up
    to 1), clears the failures and the cool-down, and resumes a host the
    breaker had paused; NONE changes nothing but the connection charge.

    When ``failure_threshold`` failures in a row are reached the breaker
    opens: ``paused_until = now + cool_down``, and the next cool-down doubles
    (up to ``max_cool_down``). Failures then stand one short of the
    threshold, so after the pause a single trial session decides: a failure
    re-trips, a clean answer resumes. Failures of sessions that end while
    the breaker is open (started before it tripped) do not re-trip it.

    Args:
        state: The host's state.
        limits: The host's limits.
        now: Seconds since the epoch.
        connections: New TCP connections the probe opened (0 or more).
        signal: What the probe's answers say (:func:`signal_of`).
        host: The host's name, for the change's message.
        sent_since: When the probe's RCPTs were granted (seconds since the epoch).

    Returns:
        The new state, and the change to log when the factor or the pause changed.

    Raises:
        ValueError: ``connections`` is negative.
    """
    if connections < 0:
        raise ValueError(f"connections counts connections opened, 0 or more, not {connections}.")
    before, _ = _refill(state, limits, now)
    connection_tokens = before.connection_tokens
    assert connection_tokens is not None
    if sent_since is not None and sent_since < now:
        granted, _ = _refill(state, limits, sent_since)
        before = dataclasses.replace(before, rcpt_tokens=granted.rcpt_tokens)
    charged = dataclasses.replace(
        before,
        connection_tokens=connection_tokens - connections,
        connections=before.connections + connections,
    )
    after = _adapt(charged, limits, now, signal)
    change = _change(before, after, limits, signal, host, now)
    if change is None:
        return after, None
    return dataclasses.replace(after, last_change=change.message), change


def _adapt(state: HostState, limits: HostLimits, now: float, signal: Signal) -> HostState:
    """Apply the AIMD step and the breaker's count for ``signal``."""
    if signal is Signal.NONE:
        return state
    if signal is Signal.CLEAN:
        factor = _clamp_factor(round(state.factor + limits.increase, 9), limits)
        return dataclasses.replace(
            state, factor=factor, failures=0, cool_down=0.0, paused_until=0.0
        )
    if signal in _CUT_BECAUSE:
        state = _cut(state, limits, throttled=signal is Signal.THROTTLED)
    return _fail(state, limits, now)


def _cut(state: HostState, limits: HostLimits, *, throttled: bool) -> HostState:
    """Multiply the factor down, and drop the tokens above the smaller capacity."""
    factor = _clamp_factor(round(state.factor * limits.decrease, 9), limits)
    capacity = _Budget.of(limits, factor).rcpt_capacity
    assert state.rcpt_tokens is not None
    return dataclasses.replace(
        state,
        factor=factor,
        rcpt_tokens=min(state.rcpt_tokens, capacity),
        throttles=state.throttles + int(throttled),
    )


def _fail(state: HostState, limits: HostLimits, now: float) -> HostState:
    """Count a failed session; open the breaker at the threshold."""
    if state.paused(now):
        return state
    failures = state.failures + 1
    if failures < limits.failure_threshold:
        return dataclasses.replace(state, failures=failures)
    pause = min(state.cool_down if state.cool_down > 0 else limits.cool_down, limits.max_cool_down)
    return dataclasses.replace(
        state,
        failures=limits.failure_threshold - 1,
        paused_until=now + pause,
        cool_down=min(pause * 2.0, limits.max_cool_down),
    )


def _change(
    before: HostState, after: HostState, limits: HostLimits, signal: Signal, host: str, now: float
) -> Change | None:
    """The change from ``before`` to ``after`` worth a log line, if any."""
    budget = f"budget at {after.factor:.0%}"
    if after.paused_until > before.paused_until:
        pause = _duration(after.paused_until - now)
        why = (
            "its trial session failed too"
            if before.paused_until > 0
            else f"{limits.failure_threshold} failed sessions in a row"
        )
        message = f"{host}: paused for {pause} after {why}; {budget}."
        return Change("pause", message, after.factor, after.paused_until)
    if before.paused_until > 0 and after.paused_until == 0:
        message = f"{host}: resumed after a clean session; {budget}."
        return Change("resume", message, after.factor, 0.0)
    if after.factor < before.factor:
        message = f"{host}: budget cut to {after.factor:.0%} after {_CUT_BECAUSE[signal]}."
        return Change("decrease", message, after.factor, after.paused_until)
    if after.factor > before.factor:
        message = f"{host}: budget raised to {after.factor:.0%} after a clean session."
        return Change("increase", message, after.factor, after.paused_until)
    return None


def _duration(seconds: float) -> str:
    """``seconds`` for people: "30 s", "5 min", "2 h"."""
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"
