"""Retry scheduling: causes, tiers, attempt limits per cause and the maximum age."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.retry import (
    DEFAULT_ATTEMPTS,
    Cause,
    Retry,
    RetryPolicy,
    cause_of,
    parse_attempts,
    parse_delays,
)
from streams.core.verdict import Reason

T0 = 1_700_000_000.0
POLICY = RetryPolicy()  # delays 60, 300, 900, 1800; max age 7200

RETRIED = {
    Reason.GREYLISTED: Cause.GREYLISTED,
    Reason.THROTTLED: Cause.THROTTLED,
    Reason.TIMEOUT: Cause.TIMEOUT,
    Reason.DNS_ERROR: Cause.DNS,
    Reason.TEMPORARY_FAILURE: Cause.TEMPORARY,
}


@pytest.mark.parametrize(("reason", "cause"), RETRIED.items())
def test_temporary_reasons_are_retried(reason: Reason, cause: Cause) -> None:
    """Greylisting, throttling, timeouts, DNS failures and other 4xx get another try."""
    assert cause_of(reason) is cause


@pytest.mark.parametrize("reason", [r for r in Reason if r not in RETRIED])
def test_other_reasons_are_final(reason: Reason) -> None:
    """Everything else, a refused connection included, is final at once."""
    assert cause_of(reason) is None


def test_default_attempts() -> None:
    """The documented attempt limit of each cause."""
    assert dict(DEFAULT_ATTEMPTS) == {
        Cause.GREYLISTED: 4,
        Cause.THROTTLED: 3,
        Cause.TIMEOUT: 2,
        Cause.DNS: 3,
        Cause.TEMPORARY: 2,
        Cause.BUDGET: 100,
    }


def test_attempts_override_only_the_causes_named() -> None:
    """A partial mapping keeps the defaults for the other causes."""
    policy = RetryPolicy(attempts={Cause.TIMEOUT: 0, Cause.GREYLISTED: 6})
    assert policy.attempts[Cause.TIMEOUT] == 0
    assert policy.attempts[Cause.GREYLISTED] == 6
    assert policy.attempts[Cause.DNS] == DEFAULT_ATTEMPTS[Cause.DNS]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delays": ()}, r"^Give at least one retry delay"),
        ({"delays": (0.0,)}, r"^The retry delay 0.0 must be a number of seconds above 0\.$"),
        ({"delays": (60.0, -1.0)}, r"^The retry delay -1.0 must be"),
        ({"delays": (math.inf,)}, r"^The retry delay inf must be"),
        ({"delays": (60.0, 30.0)}, r"^The retry delays must not decrease \(60 then 30\)"),
        ({"max_age": 0.0}, r"^The retry max age must be a number of seconds above 0, not 0.0\.$"),
        ({"max_age": math.nan}, r"^The retry max age must be"),
        ({"attempts": {"bogus": 1}}, r"^'bogus' is not a retry cause; use one of greylisted"),
        ({"attempts": {Cause.DNS: -1}}, r"^The attempt limit for dns must be a whole number"),
        ({"attempts": {Cause.DNS: 1.5}}, r"^The attempt limit for dns must be a whole number"),
    ],
)
def test_bad_policies_are_refused(options: dict[str, object], message: str) -> None:
    """Each out-of-range setting is a sentence naming it."""
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cause", "done", "first_seen", "now", "retry"),
    [
        (Cause.GREYLISTED, 0, T0, T0, Retry(0, T0 + 60)),
        (Cause.GREYLISTED, 1, T0, T0 + 60, Retry(1, T0 + 360)),
        (Cause.GREYLISTED, 3, T0, T0 + 1000, Retry(3, T0 + 2800)),
        (Cause.GREYLISTED, 4, T0, T0 + 3000, None),  # 4 retries made: the limit
        (Cause.TIMEOUT, 1, T0, T0 + 60, Retry(1, T0 + 360)),
        (Cause.TIMEOUT, 2, T0, T0 + 400, None),
        (Cause.THROTTLED, 0, T0, T0 + 7140, Retry(0, T0 + 7200)),  # due exactly at max age
        (Cause.THROTTLED, 0, T0, T0 + 7141, None),  # due a second past it
        (Cause.DNS, 2, T0, T0 + 6500, None),  # tier 2 (900 s) would pass the max age
        (Cause.BUDGET, 99, T0, T0, Retry(3, T0 + 1800)),  # past the last tier: the last
        (Cause.BUDGET, 100, T0, T0, None),
    ],
)
def test_after(cause: Cause, done: int, first_seen: float, now: float, retry: Retry | None) -> None:
    """The tier is the number of retries made (then the last), due its delay from now."""
    assert POLICY.after(cause, done, first_seen, now) == retry


@pytest.mark.parametrize(
    ("wait", "done", "now", "retry"),
    [
        (0.0, 0, T0, Retry(0, T0)),
        (12.5, 0, T0, Retry(0, T0 + 12.5)),  # due when the budget says, not after 60 s
        (60.0, 0, T0, Retry(0, T0 + 60)),
        (60.5, 0, T0, Retry(1, T0 + 60.5)),  # the first tier whose delay covers the wait
        (900.0, 5, T0, Retry(2, T0 + 900)),
        (5000.0, 0, T0, Retry(3, T0 + 5000)),  # longer than every tier: the last
        (5000.0, 0, T0 + 3000, None),  # past the max age
        (1.0, 100, T0, None),  # the BUDGET limit
    ],
)
def test_defer(wait: float, done: int, now: float, retry: Retry | None) -> None:
    """A budget deferral is due after the budget's wait, in the tier that covers it."""
    assert POLICY.defer(wait, done, T0, now) == retry


@pytest.mark.parametrize("wait", [-1.0, math.inf, math.nan])
def test_defer_refuses_a_meaningless_wait(wait: float) -> None:
    """A wait is a finite number of seconds, 0 or more."""
    with pytest.raises(ValueError, match="wait must be a number of seconds, 0 or more"):
        POLICY.defer(wait, 0, T0, T0)


def test_negative_done_is_refused() -> None:
    """Retries made are counted from 0."""
    with pytest.raises(ValueError, match="done counts retries already made"):
        POLICY.after(Cause.GREYLISTED, -1, T0, T0)


@pytest.mark.parametrize(
    ("text", "delays"),
    [
        ("60,300,900,1800", (60.0, 300.0, 900.0, 1800.0)),
        ("1 2 5", (1.0, 2.0, 5.0)),
        (" 0.5, 0.5 ,2 ", (0.5, 0.5, 2.0)),
        ("10", (10.0,)),
    ],
)
def test_parse_delays(text: str, delays: tuple[float, ...]) -> None:
    """Delays are seconds separated by commas or blanks."""
    assert parse_delays(text) == delays


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"^Give at least one retry delay, e\.g\. 60,300,900,1800 \(seconds\)\.$"),
        (" , ", r"^Give at least one retry delay"),
        ("60,1m", r"^The retry delay '1m' is not a number of seconds; write the delays like"),
        ("60,-5", r"^The retry delay -5.0 must be a number of seconds above 0\.$"),
        ("300,60", r"^The retry delays must not decrease \(300 then 60\); list each tier"),
        ("60 nan", r"^The retry delay nan must be"),
    ],
)
def test_bad_delays_are_explained(text: str, message: str) -> None:
    """A bad delay list says what is wrong and how to write it."""
    with pytest.raises(ValueError, match=message):
        parse_delays(text)


@pytest.mark.parametrize(
    ("text", "attempts"),
    [
        ("", {}),
        ("greylisted=5,timeout=1", {Cause.GREYLISTED: 5, Cause.TIMEOUT: 1}),
        ("greylisted = 5  DNS=0", {Cause.GREYLISTED: 5, Cause.DNS: 0}),
        ("budget=1000", {Cause.BUDGET: 1000}),
    ],
)
def test_parse_attempts(text: str, attempts: dict[Cause, int]) -> None:
    """Overrides are cause=number, separated by commas or blanks."""
    assert parse_attempts(text) == attempts


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("greylisted", r"^The attempt limit 'greylisted' is not cause=number; write e\.g\."),
        ("=3", r"^The attempt limit '=3' is not cause=number"),
        ("grey=3", r"^'grey' is not a retry cause; use one of greylisted, throttled, timeout"),
        ("timeout=-1", r"^The attempt limit for timeout must be a whole number, 0 or more, not"),
        ("timeout=1.5", r"^The attempt limit for timeout must be a whole number"),
        ("timeout=1,timeout=2", r"^The attempt limit for timeout is given twice; keep one\.$"),
    ],
)
def test_bad_attempts_are_explained(text: str, message: str) -> None:
    """A bad override says what is wrong and how to write it."""
    with pytest.raises(ValueError, match=message):
        parse_attempts(text)


# --- properties ----------------------------------------------------------------------

delays_strategy = st.lists(st.floats(0.01, 5000.0), min_size=1, max_size=6).map(
    lambda delays: tuple(sorted(delays))
)
attempts_strategy = st.dictionaries(st.sampled_from(list(Cause)), st.integers(0, 12))


@st.composite
def policies(draw: st.DrawFn) -> RetryPolicy:
    return RetryPolicy(
        delays=draw(delays_strategy),
        attempts=draw(attempts_strategy),
        max_age=draw(st.floats(1.0, 50_000.0)),
    )


@settings(max_examples=300)
@given(
    policy=policies(),
    cause=st.sampled_from(list(Cause)),
    done=st.integers(0, 20),
    age=st.floats(0.0, 60_000.0),
    wait=st.floats(0.0, 10_000.0),
)
def test_no_retry_is_due_past_the_max_age(
    policy: RetryPolicy, cause: Cause, done: int, age: float, wait: float
) -> None:
    """Whatever the policy and the moment, no retry is due after first_seen + max_age."""
    now = T0 + age
    for retry in (policy.after(cause, done, T0, now), policy.defer(wait, done, T0, now)):
        if retry is not None:
            assert now <= retry.due_at <= T0 + policy.max_age
            assert 0 <= retry.tier < len(policy.delays)


def count_retries(policy: RetryPolicy, cause: Cause) -> int:
    """Retry each failure as the policy says until it gives up; return the retries made."""
    done, now = 0, T0
    while (retry := policy.after(cause, done, T0, now)) is not None:
        now = retry.due_at
        done += 1
    return done


@settings(max_examples=200)
@given(policy=policies(), cause=st.sampled_from(list(Cause)))
def test_attempts_never_exceed_the_limit(policy: RetryPolicy, cause: Cause) -> None:
    """A failing address is retried at most its cause's limit."""
    assert count_retries(policy, cause) <= policy.attempts[cause]


@given(attempts=attempts_strategy, delays=delays_strategy)
def test_without_an_age_limit_the_count_is_exact(
    attempts: Mapping[Cause, int], delays: tuple[float, ...]
) -> None:
    """With time to spare, every cause gets exactly its limit of retries."""
    policy = RetryPolicy(delays=delays, attempts=attempts, max_age=1e9)
    for cause in Cause:
        assert count_retries(policy, cause) == policy.attempts[cause]


@given(delays=delays_strategy, separator=st.sampled_from([",", " ", ", ", "\t"]))
def test_parse_delays_reads_what_was_written(delays: tuple[float, ...], separator: str) -> None:
    """Delays written out with any separator parse back to themselves."""
    assert parse_delays(separator.join(map(repr, delays))) == delays


@given(attempts=attempts_strategy)
def test_parse_attempts_reads_what_was_written(attempts: dict[Cause, int]) -> None:
    """cause=number pairs parse back to the mapping they came from."""
    text = ",".join(f"{cause}={limit}" for cause, limit in attempts.items())
    assert parse_attempts(text) == attempts
