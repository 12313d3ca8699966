"""A mail host's limits and its budget state: the values :mod:`streams.core.throttle` works on.

:class:`HostLimits` is what mxprobe allows itself against one mail host (by
provider: :class:`~streams.core.politeness.Politeness`), each limit checked
against its :data:`LIMIT_BOUNDS`. :class:`HostState` is a host's budget and
health as the pipeline keeps it in its mail-host table (JSON, read back
field by field so that a damaged entry is a sentence, not a crash).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_LIMITS", "LIMIT_BOUNDS", "HostLimits", "HostState", "LimitBound"]


@dataclass(frozen=True, slots=True)
class LimitBound:
    """What a limit must be: a (whole) number in a range, and how to say so."""

    whole: bool
    accepts: Callable[[float], bool]
    wording: str

    def problem(self, name: str, value: object) -> str | None:
        """Why ``value`` cannot be the limit ``name``, or None when it can."""
        refusal = f"{name} must be {self.wording}, not {value!r}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return refusal
        if self.whole and not isinstance(value, int):
            return refusal
        if math.isfinite(value) and self.accepts(float(value)):
            return None
        return refusal


def _positive(value: float) -> bool:
    return value > 0


def _at_least_one(value: float) -> bool:
    return value >= 1


LIMIT_BOUNDS: Mapping[str, LimitBound] = {
    "rcpt_per_second": LimitBound(False, _positive, "a number above 0"),
    "rcpt_burst": LimitBound(True, _at_least_one, "a whole number of at least 1"),
    "connections_per_minute": LimitBound(False, _positive, "a number above 0"),
    "connection_burst": LimitBound(True, _at_least_one, "a whole number of at least 1"),
    "max_sessions": LimitBound(True, _at_least_one, "a whole number of at least 1"),
    "rcpt_per_session": LimitBound(True, _at_least_one, "a whole number of at least 1"),
    "decrease": LimitBound(False, lambda v: 0 < v < 1, "a number above 0 and below 1"),
    "increase": LimitBound(False, lambda v: 0 < v <= 1, "a number above 0 and at most 1"),
    "min_factor": LimitBound(False, lambda v: 0 < v <= 1, "a number above 0 and at most 1"),
    "failure_threshold": LimitBound(True, _at_least_one, "a whole number of at least 1"),
    "cool_down": LimitBound(False, _positive, "a number of seconds above 0"),
    "max_cool_down": LimitBound(False, _positive, "a number of seconds above 0"),
}


@dataclass(frozen=True, slots=True)
class HostLimits:
    """What mxprobe allows itself against one mail host (at factor 1.0).

    Raises:
        ValueError: a limit is out of range (a sentence naming it).
    """

    rcpt_per_second: float = 1.0  # sustained RCPT rate
    rcpt_burst: int = 20  # token bucket capacity for RCPTs
    connections_per_minute: float = 6.0  # sustained new-connection rate
    connection_burst: int = 3  # bucket capacity for connections
    max_sessions: int = 2  # concurrent sessions to this host
    rcpt_per_session: int = 50  # recipients one SMTP session may carry
    decrease: float = 0.5  # AIMD: factor *= decrease on a throttle signal
    increase: float = 0.1  # AIMD: factor += increase per clean session
    min_factor: float = 0.05
    failure_threshold: int = 5  # consecutive failed sessions that open the breaker
    cool_down: float = 300.0  # first pause; doubles on each re-trip, up to max_cool_down
    max_cool_down: float = 3600.0

    def __post_init__(self) -> None:
        for name, bound in LIMIT_BOUNDS.items():
            problem = bound.problem(name, getattr(self, name))
            if problem is not None:
                raise ValueError(f"The host limit {problem}.")
        if self.max_cool_down < self.cool_down:
            raise ValueError(
                f"The host limit max_cool_down ({self.max_cool_down:g} s) must be at least "
                f"cool_down ({self.cool_down:g} s); raise it or lower cool_down."
            )

    def ceiling(self, window: float) -> float:
        """The most RCPTs this host can get in any ``window`` seconds (burst + rate × window)."""
        return self.rcpt_burst + self.rcpt_per_second * max(0.0, window)


#: The limits of a mail host that no rule names, unless the caller sets others.
DEFAULT_LIMITS = HostLimits()


@dataclass(frozen=True, slots=True)
class HostState:
    """One mail host's budget and health; lives in the pipeline's mail-host table (JSON)."""

    factor: float = 1.0  # AIMD multiplier on the rates and bursts, in [min_factor, 1]
    rcpt_tokens: float | None = None  # None = a full bucket (a host never seen)
    connection_tokens: float | None = None
    updated_at: float = 0.0  # epoch seconds of the last refill
    failures: int = 0  # consecutive failed sessions
    paused_until: float = 0.0  # breaker open until then; 0 = never tripped or resumed since
    cool_down: float = 0.0  # the pause the next trip will use (0 = limits.cool_down)
    throttles: int = 0  # throttle signals seen in all
    rcpts: int = 0  # RCPTs granted in all
    connections: int = 0  # connections charged in all
    last_change: str = ""  # why the state last changed (for `mxprobe hosts`)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostState:
        """The state stored by :meth:`to_dict`; missing keys take their defaults.

        Unknown keys are ignored (a newer mxprobe may have written them).

        Raises:
            ValueError: a field holds a value of the wrong kind.
        """
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name in data:
                values[field.name] = _STATE_FIELDS[field.name](field.name, data[field.name])
        return cls(**values)

    def paused(self, now: float) -> bool:
        """True while the breaker is open (the host gets no probe)."""
        return now < self.paused_until


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(
            f"The mail-host state field {name!r} holds {value!r}, not a number; "
            "delete the host's entry from the table to start it afresh."
        )
    return float(value)


def _optional_number(name: str, value: Any) -> float | None:
    return None if value is None else _number(name, value)


def _count(name: str, value: Any) -> int:
    number = _number(name, value)
    if not number.is_integer():
        raise ValueError(
            f"The mail-host state field {name!r} holds {value!r}, not a whole number; "
            "delete the host's entry from the table to start it afresh."
        )
    return int(number)


def _text(name: str, value: Any) -> str:
    return str(value)


_STATE_FIELDS: Mapping[str, Callable[[str, Any], Any]] = {
    "factor": _number,
    "rcpt_tokens": _optional_number,
    "connection_tokens": _optional_number,
    "updated_at": _number,
    "failures": _count,
    "paused_until": _number,
    "cool_down": _number,
    "throttles": _count,
    "rcpts": _count,
    "connections": _count,
    "last_change": _text,
}
