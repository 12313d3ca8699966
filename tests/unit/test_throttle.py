"""Politeness budgets: token buckets, AIMD, the circuit breaker and provider rules."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.host_state import DEFAULT_LIMITS, HostLimits, HostState
from streams.core.politeness import Politeness
from streams.core.probe import RcptOutcome, SessionFailure
from streams.core.replies import Phase, ReplyClass, SmtpReply
from streams.core.throttle import Signal, probe_signal, settle, signal_of, take, wait_for

NOW = 1_700_000_000.0  # a realistic epoch: float rounding is that of production
# 1 RCPT/s, burst 10; 6 connections/min (one per 10 s), burst 2.
LIMITS = HostLimits(
    rcpt_per_second=1.0, rcpt_burst=10, connections_per_minute=6.0, connection_burst=2
)
SLACK = 1e-3  # the documented slack wait_for adds
EPSILON = 1e-6


def drained(at: float = NOW, **fields: Any) -> HostState:
    """A host whose RCPT bucket is empty at ``at`` (connections full)."""
    return dataclasses.replace(HostState(rcpt_tokens=0.0, updated_at=at), **fields)


# --- HostLimits ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rcpt_per_second", 0.0),
        ("rcpt_per_second", -1.0),
        ("rcpt_per_second", math.inf),
        ("rcpt_per_second", math.nan),
        ("rcpt_burst", 0),
        ("rcpt_burst", 2.5),
        ("connections_per_minute", 0.0),
        ("connection_burst", 0),
        ("max_sessions", 0),
        ("rcpt_per_session", 0),
        ("decrease", 1.0),
        ("decrease", 0.0),
        ("increase", 0.0),
        ("increase", 1.5),
        ("min_factor", 0.0),
        ("min_factor", 1.01),
        ("failure_threshold", 0),
        ("cool_down", 0.0),
        ("max_cool_down", -5.0),
        ("max_sessions", True),
    ],
)
def test_limits_out_of_range_are_refused(field: str, value: object) -> None:
    """A limit out of its range is a ValueError naming the limit and the value."""
    with pytest.raises(ValueError, match=rf"^The host limit {field} must be .*, not {value!r}\.$"):
        HostLimits(**{field: value})  # type: ignore[arg-type]


def test_max_cool_down_below_cool_down_is_refused() -> None:
    """The longest pause cannot be shorter than the first one."""
    with pytest.raises(ValueError, match=r"max_cool_down \(60 s\) must be at least cool_down"):
        HostLimits(cool_down=120.0, max_cool_down=60.0)


@pytest.mark.parametrize(("window", "most"), [(0.0, 10.0), (1.0, 11.0), (3600.0, 3610.0)])
def test_ceiling_is_burst_plus_rate_times_window(window: float, most: float) -> None:
    """The most RCPTs in a window is the burst plus what the rate refills."""
    assert LIMITS.ceiling(window) == most


# --- take ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "now", "want", "granted"),
    [
        (HostState(), NOW, 100, 10),  # a host never seen: a full bucket
        (HostState(), NOW, 4, 4),  # no more than asked
        (HostState(), NOW, 0, 0),
        (HostState(), NOW, -3, 0),
        (drained(), NOW, 5, 0),
        (drained(), NOW + 3.0, 5, 3),  # exact refill time: 3 s at 1/s
        (drained(), NOW + 2.999, 5, 2),
        (drained(), NOW + 1000.0, 50, 10),  # never more than the burst
        (drained(rcpt_tokens=-2.0), NOW + 3.0, 5, 1),  # a debt is paid first
        (drained(factor=0.5), NOW + 4.0, 5, 2),  # half the rate
        (drained(factor=0.5), NOW + 100.0, 50, 5),  # half the burst
        (drained(factor=0.05), NOW + 100.0, 50, 1),  # capacity never below 1
        (HostState(factor=3.0), NOW, 50, 10),  # a factor above 1 counts as 1
        (HostState(factor=-1.0), NOW, 50, 1),  # and one below min_factor as min_factor
        (drained(rcpt_tokens=500.0), NOW, 50, 10),  # a bucket above capacity is cut to it
        (drained(updated_at=NOW + 50.0), NOW, 5, 0),  # clock behind the last refill: no refill
    ],
)
def test_take_grants_what_the_bucket_holds(
    state: HostState, now: float, want: int, granted: int
) -> None:
    """Grants are the refilled tokens (rate and burst times the factor), at most ``want``."""
    got, after = take(state, LIMITS, now, want)
    assert got == granted
    assert after.rcpts == state.rcpts + granted


def test_take_removes_the_granted_tokens() -> None:
    """What was granted is gone from the bucket; the refill time is now."""
    _, after = take(drained(), LIMITS, NOW + 5.0, 3)
    assert after.rcpt_tokens == pytest.approx(2.0)
    assert after.updated_at == NOW + 5.0


@pytest.mark.parametrize(
    ("state", "now", "granted"),
    [
        (drained(rcpt_tokens=10.0, paused_until=NOW + 10.0), NOW, 0),  # breaker open
        (drained(rcpt_tokens=10.0, paused_until=NOW + 10.0), NOW + 9.999, 0),
        (drained(rcpt_tokens=10.0, paused_until=NOW + 10.0), NOW + 10.0, 10),  # pause over
        (drained(rcpt_tokens=10.0, connection_tokens=0.5), NOW, 0),  # no connection
        (drained(rcpt_tokens=10.0, connection_tokens=0.5), NOW + 5.0, 10),  # 0.5 + 5 s × 0.1/s
        (drained(rcpt_tokens=10.0, connection_tokens=-1.0), NOW + 19.9, 0),  # debt of 1 + 1
        (drained(rcpt_tokens=10.0, connection_tokens=-1.0), NOW + 20.0, 10),
    ],
)
def test_take_needs_a_connection_and_a_closed_breaker(
    state: HostState, now: float, granted: int
) -> None:
    """No RCPT is granted while paused or while the connection bucket is under 1."""
    assert take(state, LIMITS, now, 10)[0] == granted


@pytest.mark.parametrize(
    ("limits", "state", "reserve", "granted"),
    [
        (LIMITS, HostState(), 0.25, 7),  # 10 - 2.5 reserved
        (LIMITS, HostState(), 0.5, 5),
        (LIMITS, drained(rcpt_tokens=3.0), 0.25, 0),  # only the reserve is left
        (LIMITS, drained(rcpt_tokens=3.0), 0.0, 3),  # live traffic gets it
        (HostLimits(rcpt_burst=1), HostState(), 0.25, 1),  # capacity 1: bulk is not starved
        (HostLimits(rcpt_burst=4), HostState(), 0.9, 1),  # one token above the reserve, always
    ],
)
def test_bulk_callers_leave_the_reserve(
    limits: HostLimits, state: HostState, reserve: float, granted: int
) -> None:
    """A reserve keeps a fraction of the capacity for live traffic."""
    assert take(state, limits, NOW, 100, reserve=reserve)[0] == granted


@pytest.mark.parametrize("reserve", [-0.1, 1.0, 2.0])
def test_reserve_outside_zero_to_one_is_refused(reserve: float) -> None:
    """A reserve is a fraction of the bucket, below 1."""
    with pytest.raises(ValueError, match="reserve must be at least 0 and below 1"):
        take(HostState(), LIMITS, NOW, 1, reserve=reserve)


# --- wait_for --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "n", "reserve", "wait"),
    [
        (drained(), 1, 0.0, 1.0),  # 1 RCPT/s
        (drained(), 3, 0.0, 3.0),
        (drained(rcpt_tokens=0.25), 1, 0.0, 0.75),
        (drained(rcpt_tokens=-2.0), 1, 0.0, 3.0),
        (HostState(), 1, 0.0, 1.0),  # 10 grantable now; the 11th in 1 s
        (drained(factor=0.5), 2, 0.0, 4.0),  # half rate
        (drained(), 1, 0.25, 3.5),  # 2.5 reserved first
        (drained(rcpt_tokens=2.75), 1, 0.25, 0.75),  # none grantable above the reserve
        (drained(paused_until=NOW + 60.0), 1, 0.0, 60.0),  # the pause dominates
        (drained(connection_tokens=-1.0), 1, 0.0, 20.0),  # the connection debt dominates
    ],
)
def test_wait_for_is_the_refill_time(state: HostState, n: int, reserve: float, wait: float) -> None:
    """The n-th held-back RCPT waits for its tokens, a connection and the pause."""
    assert wait_for(state, LIMITS, NOW, n, reserve=reserve) == pytest.approx(wait + SLACK)


@pytest.mark.parametrize("n", [0, -1])
def test_wait_for_counts_from_one(n: int) -> None:
    """n is a position among held-back recipients."""
    with pytest.raises(ValueError, match="n counts held-back recipients from 1"):
        wait_for(HostState(), LIMITS, NOW, n)


# --- settle ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "signal", "factor", "failures", "throttles", "kind"),
    [
        (HostState(), Signal.THROTTLED, 0.5, 1, 1, "decrease"),
        (HostState(), Signal.REFUSED, 0.5, 1, 0, "decrease"),
        (HostState(), Signal.FAILED, 1.0, 1, 0, None),
        (HostState(), Signal.CLEAN, 1.0, 0, 0, None),  # at the cap: nothing to log
        (HostState(), Signal.NONE, 1.0, 0, 0, None),
        (HostState(factor=0.5, failures=3), Signal.CLEAN, 0.6, 0, 0, "increase"),
        (HostState(factor=0.95), Signal.CLEAN, 1.0, 0, 0, "increase"),  # capped at 1
        (HostState(factor=0.06), Signal.THROTTLED, 0.05, 1, 1, "decrease"),  # floored
        (HostState(factor=0.05), Signal.THROTTLED, 0.05, 1, 1, None),  # at the floor
        (HostState(factor=0.5, failures=2), Signal.NONE, 0.5, 2, 0, None),
    ],
)
def test_settle_applies_aimd(
    state: HostState,
    signal: Signal,
    factor: float,
    failures: int,
    throttles: int,
    kind: str | None,
) -> None:
    """Throttles and refusals cut the factor, clean sessions add to it, failures count."""
    after, change = settle(state, DEFAULT_LIMITS, NOW, connections=0, signal=signal)
    assert after.factor == pytest.approx(factor)
    assert (after.failures, after.throttles) == (failures, throttles)
    assert (change.kind if change else None) == kind


@pytest.mark.parametrize(
    ("signal", "message"),
    [
        (Signal.THROTTLED, "mx.example.test: budget cut to 50% after a throttling reply"),
        (Signal.REFUSED, "mx.example.test: budget cut to 50% after refused connections."),
    ],
)
def test_a_cut_is_logged_with_host_and_budget(signal: Signal, message: str) -> None:
    """The change message names the host, the new budget and why."""
    after, change = settle(
        HostState(), LIMITS, NOW, connections=1, signal=signal, host="mx.example.test"
    )
    assert change is not None and change.message.startswith(message)
    assert after.last_change == change.message


def test_a_cut_drops_the_tokens_above_the_new_capacity() -> None:
    """After a throttle the host gets no burst sized for the old budget."""
    after, _ = settle(HostState(), LIMITS, NOW, connections=0, signal=Signal.THROTTLED)
    assert take(after, LIMITS, NOW, 100)[0] == 5


def test_settle_charges_connections_as_a_debt() -> None:
    """Connections are charged even past zero, and counted."""
    after, _ = settle(HostState(), LIMITS, NOW, connections=5, signal=Signal.CLEAN)
    assert after.connection_tokens == pytest.approx(-3.0)
    assert after.connections == 5
    assert take(after, LIMITS, NOW + 39.9, 1)[0] == 0  # 4 tokens at 0.1/s: 40 s
    assert take(after, LIMITS, NOW + 40.0, 1)[0] == 1


@pytest.mark.parametrize(
    ("sent_since", "tokens"),
    [
        (None, 10.0),  # 10 s at 1 RCPT/s credited: the grant counted at its start
        (NOW, 0.0),  # sent over the 10 s session: nothing refills meanwhile
        (NOW + 4.0, 4.0),  # granted 4 s later: only those 4 s refill
        (NOW + 10.0, 10.0),  # granted at the end: everything before counts
    ],
)
def test_settle_forfeits_the_refill_while_a_session_sends(
    sent_since: float | None, tokens: float
) -> None:
    """RCPT tokens do not refill between a grant and the end of its session."""
    limits = HostLimits(rcpt_per_second=1.0, rcpt_burst=20)
    granted, state = take(HostState(), limits, NOW, 20)
    assert granted == 20 and state.rcpt_tokens == pytest.approx(0.0)
    after, _ = settle(
        state, limits, NOW + 10.0, connections=1, signal=Signal.NONE, sent_since=sent_since
    )
    assert after.rcpt_tokens == pytest.approx(tokens)
    assert after.updated_at == NOW + 10.0


def test_settle_refuses_negative_connections() -> None:
    """A probe cannot open fewer than no connections."""
    with pytest.raises(ValueError, match="connections counts connections opened"):
        settle(HostState(), LIMITS, NOW, connections=-1, signal=Signal.CLEAN)


BREAKER = HostLimits(failure_threshold=3, cool_down=100.0, max_cool_down=250.0)


@pytest.mark.parametrize(
    ("state", "paused_until", "cool_down", "failures"),
    [
        (HostState(failures=1), 0.0, 0.0, 2),  # below the threshold
        (HostState(failures=2), NOW + 100.0, 200.0, 2),  # trips: first pause, next doubled
        # A trial session after the pause fails: re-trip with the doubled pause.
        (HostState(failures=2, paused_until=NOW - 1.0, cool_down=200.0), NOW + 200.0, 250.0, 2),
        (HostState(failures=2, paused_until=NOW - 1.0, cool_down=250.0), NOW + 250.0, 250.0, 2),
        # A session that ends while the breaker is open does not re-trip it.
        (HostState(failures=2, paused_until=NOW + 50.0, cool_down=200.0), NOW + 50.0, 200.0, 2),
    ],
)
def test_breaker_trips_at_the_threshold(
    state: HostState, paused_until: float, cool_down: float, failures: int
) -> None:
    """failure_threshold failures in a row pause the host; each re-trip doubles, up to max."""
    after, _ = settle(state, BREAKER, NOW, connections=1, signal=Signal.FAILED)
    assert (after.paused_until, after.cool_down, after.failures) == (
        paused_until,
        cool_down,
        failures,
    )


def test_a_trip_is_logged_as_a_pause() -> None:
    """The pause's change says how long and why."""
    after, change = settle(
        HostState(failures=2), BREAKER, NOW, connections=1, signal=Signal.FAILED, host="mx.t"
    )
    assert change is not None and change.kind == "pause"
    assert (
        change.message == "mx.t: paused for 100 s after 3 failed sessions in a row; budget at 100%."
    )
    assert after.paused(NOW + 99.0) and not after.paused(NOW + 100.0)
    assert change.paused_until == NOW + 100.0


def test_a_clean_trial_resumes_the_host() -> None:
    """A paused host that answers cleanly again is resumed, its cool-down reset."""
    paused = HostState(factor=0.5, failures=2, paused_until=NOW - 1.0, cool_down=200.0)
    after, change = settle(paused, BREAKER, NOW, connections=1, signal=Signal.CLEAN, host="mx.t")
    assert change is not None and change.kind == "resume"
    assert change.message == "mx.t: resumed after a clean session; budget at 60%."
    assert (after.paused_until, after.cool_down, after.failures) == (0.0, 0.0, 0)


def test_a_full_breaker_cycle() -> None:
    """Fail to the threshold, wait out the pause, fail the trial, wait, pass the trial."""
    state = HostState()
    kinds: list[str | None] = []
    now = NOW
    for signal in [Signal.FAILED] * 3 + [Signal.FAILED] + [Signal.CLEAN]:
        wait = wait_for(state, BREAKER, now, 1)
        now += wait
        granted, state = take(state, BREAKER, now, 1)
        assert granted == 1
        state, change = settle(state, BREAKER, now, connections=1, signal=signal)
        kinds.append(change.kind if change else None)
    assert kinds == [None, None, "pause", "pause", "resume"]
    assert now > NOW + 100.0 + 200.0  # both pauses were waited out


# --- signal_of ---------------------------------------------------------------------

R, F = ReplyClass, SessionFailure


@pytest.mark.parametrize(
    ("answers", "signal"),
    [
        ([], Signal.NONE),
        ([(R.ACCEPTED, None)], Signal.CLEAN),
        ([(R.MAILBOX_NOT_FOUND, None), (R.GREYLISTED, None)], Signal.CLEAN),
        ([(R.ACCEPTED, None), (R.RATE_LIMITED, None)], Signal.THROTTLED),
        ([(R.TOO_MANY_RECIPIENTS, None), (None, F.TIMEOUT)], Signal.THROTTLED),
        ([(R.ACCEPTED, None), (None, F.TIMEOUT)], Signal.CLEAN),  # the host did answer
        ([(None, F.CONNECTION_FAILED)] * 3, Signal.REFUSED),
        ([(None, F.CONNECTION_FAILED), (None, F.TIMEOUT)], Signal.FAILED),
        ([(None, F.DISCONNECTED)], Signal.FAILED),
        ([(None, F.PROTOCOL_ERROR)], Signal.FAILED),
        ([(None, F.DEFERRED)], Signal.NONE),  # held back by mxprobe: nothing tried
        ([(None, F.DEFERRED), (None, F.CONNECTION_FAILED)], Signal.REFUSED),
        ([(None, None)], Signal.NONE),
    ],
)
def test_signal_of_answers(
    answers: list[tuple[ReplyClass | None, SessionFailure | None]], signal: Signal
) -> None:
    """Throttling wins, then any reply, then refused connections, then other failures."""
    assert signal_of(iter(answers)) is signal


@pytest.mark.parametrize(
    ("outcomes", "signal"),
    [
        ([RcptOutcome("a@d.test", SmtpReply(250, "OK", "2.1.5"))], Signal.CLEAN),
        ([RcptOutcome("a@d.test", SmtpReply(550, "No such user", "5.1.1"))], Signal.CLEAN),
        (
            [RcptOutcome("a@d.test", SmtpReply(452, "Too many recipients", "4.5.3"))],
            Signal.THROTTLED,
        ),
        # A 421 greeting throttles as much as a 421 to RCPT.
        ([RcptOutcome("a@d.test", SmtpReply(421, "Too busy"), Phase.CONNECT)], Signal.THROTTLED),
        ([RcptOutcome("a@d.test", failure=F.CONNECTION_FAILED)], Signal.REFUSED),
        ([RcptOutcome("a@d.test", failure=F.TIMEOUT)], Signal.FAILED),
        ([], Signal.NONE),
    ],
)
def test_probe_signal_reads_each_reply_at_its_step(
    outcomes: list[RcptOutcome], signal: Signal
) -> None:
    """A probe's outcomes give the signal of their replies (at their step) and failures."""
    assert probe_signal(outcomes) is signal


# --- HostState as JSON -----------------------------------------------------------


def test_state_from_missing_keys_takes_defaults() -> None:
    """An old table entry with fewer fields still loads."""
    assert HostState.from_dict({"factor": 0.5}) == HostState(factor=0.5)
    assert HostState.from_dict({}) == HostState()


def test_state_ignores_unknown_keys_and_accepts_json_numbers() -> None:
    """A newer writer's fields are ignored; JSON ints load into float fields."""
    state = HostState.from_dict({"factor": 1, "rcpts": 3.0, "future": "x"})
    assert state == HostState(factor=1.0, rcpts=3)
    assert isinstance(state.factor, float) and isinstance(state.rcpts, int)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"factor": "big"}, "'factor' holds 'big', not a number"),
        ({"factor": True}, "'factor' holds True, not a number"),
        ({"rcpts": 2.5}, "'rcpts' holds 2.5, not a whole number"),
        ({"rcpt_tokens": []}, "'rcpt_tokens' holds \\[\\], not a number"),
    ],
)
def test_state_with_bad_values_is_refused(data: dict[str, Any], match: str) -> None:
    """A damaged table entry says which field and how to recover."""
    with pytest.raises(ValueError, match=match):
        HostState.from_dict(data)


# --- Politeness ---------------------------------------------------------------------


def test_yahoo_exchangers_get_at_most_200_per_hour() -> None:
    """Yahoo's exchangers get 200 checks in any hour, 20 per session, one session."""
    politeness = Politeness.packaged()
    for host in ("mx-eu.mail.am0.yahoodns.net", "mta5.am0.yahoodns.net", "MTA6.AM0.YAHOODNS.NET."):
        limits = politeness.limits_for(host)
        assert limits.ceiling(3600.0) == pytest.approx(200.0)
        assert (limits.rcpt_per_session, limits.max_sessions) == (20, 1)
        assert politeness.provider_of(host) == "Yahoo / AOL"


@pytest.mark.parametrize(
    ("host", "provider"),
    [
        ("gmail-smtp-in.l.google.com", "Google"),
        ("alt1.aspmx.l.google.com", "Google"),
        ("aspmx2.googlemail.com", "Google"),
        ("hotmail-com.olc.protection.outlook.com", "Microsoft Outlook.com"),
        ("example-com.mail.protection.outlook.com", "Microsoft 365"),
        ("mx01.mail.icloud.com", "Apple iCloud"),
        ("mx00.gmx.net", "GMX / web.de"),
        ("mx-ha03.web.de", "GMX / web.de"),
        ("mxs.mail.ru", "Mail.ru"),
        ("mx.yandex.ru", "Yandex"),
        ("mx.zoho.eu", "Zoho"),
        ("mail.protonmail.ch", "Proton"),
        ("mx.example.test", None),
        ("yahoodns.net", None),  # "*." needs a label in front
        ("notyahoodns.net", None),
    ],
)
def test_packaged_providers(host: str, provider: str | None) -> None:
    """The big providers' exchangers are known; other hosts get the defaults."""
    politeness = Politeness.packaged()
    assert politeness.provider_of(host) == provider
    if provider is None:
        assert politeness.limits_for(host) == DEFAULT_LIMITS
    else:
        assert politeness.limits_for(host).rcpt_per_second < DEFAULT_LIMITS.rcpt_per_second


def test_packaged_rules_never_loosen_the_defaults() -> None:
    """Lowering the defaults lowers the providers' figures too."""
    slow = HostLimits(rcpt_per_second=0.01, rcpt_burst=2, max_sessions=1, rcpt_per_session=5)
    limits = Politeness.packaged(slow).limits_for("gmail-smtp-in.l.google.com")
    assert (limits.rcpt_per_second, limits.rcpt_burst, limits.rcpt_per_session) == (0.01, 2, 5)


USER_FILE = """
[[provider]]
name = "Yahoo, our contract"
hosts = ["*.am0.yahoodns.net"]
rcpt_per_minute = 120
rcpt_burst = 40

[[provider]]
name = "Our relay"
hosts = ["relay.example.test.", "*.Internal.Example.TEST"]
connections_per_hour = 30
max_sessions = 4
cool_down = 10
max_cool_down = 20
"""


def test_user_rules_come_before_packaged_ones() -> None:
    """A user rule overrides the packaged one and inherits unset limits from the defaults."""
    politeness = Politeness.packaged(extra=USER_FILE)
    limits = politeness.limits_for("mx-eu.mail.am0.yahoodns.net")
    assert politeness.provider_of("mx-eu.mail.am0.yahoodns.net") == "Yahoo, our contract"
    assert (limits.rcpt_per_second, limits.rcpt_burst) == (2.0, 40)
    assert limits.rcpt_per_session == DEFAULT_LIMITS.rcpt_per_session
    # A Yahoo host the user rule does not match keeps the packaged rule.
    assert politeness.provider_of("mx-aol.mail.gm0.yahoodns.net") == "Yahoo / AOL"


@pytest.mark.parametrize(
    ("host", "provider"),
    [
        ("relay.example.test", "Our relay"),
        ("RELAY.example.test.", "Our relay"),
        ("other.relay.example.test", None),  # an exact pattern is exact
        ("mx1.internal.example.test", "Our relay"),
        ("internal.example.test", None),
    ],
)
def test_pattern_matching(host: str, provider: str | None) -> None:
    """Exact names match exactly, "*." any name below; case and trailing dots are ignored."""
    assert Politeness.packaged(extra=USER_FILE).provider_of(host) == provider


def test_user_rule_fields() -> None:
    """Per-hour rates and AIMD/breaker fields are read as written."""
    limits = Politeness.packaged(extra=USER_FILE).limits_for("relay.example.test")
    assert limits.connections_per_minute == pytest.approx(0.5)
    assert (limits.max_sessions, limits.cool_down, limits.max_cool_down) == (4, 10, 20)


def provider(body: str) -> str:
    return f'[[provider]]\nname = "Acme"\nhosts = ["*.acme.test"]\n{body}\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[[provider]\n",
            r"^The user file is not valid TOML: .*\(at line 1, column \d+\); fix it there\.$",
        ),
        ('limit = 3\n[[provider]]\nname = "x"', r"unknown top-level key 'limit'"),
        ('[provider]\nname = "x"', r"write each provider as a \[\[provider\]\] table"),
        ('[[provider]]\nhosts = ["*.acme.test"]', r"^Provider #1 in the user file has no name"),
        (
            provider("rcpt_per_sec = 1"),
            r"^Provider 'Acme' in the user file has the unknown key 'rcpt_per_sec'; "
            r"use name, hosts or a limit: .*rcpt_per_second",
        ),
        (
            provider("rcpt_per_hour = -200"),
            r"^Provider 'Acme' in the user file: rcpt_per_hour must be a number above 0, "
            r"not -200; fix the value\.$",
        ),
        (provider("rcpt_burst = 2.5"), r"rcpt_burst must be a whole number of at least 1"),
        (provider('max_sessions = "2"'), r"max_sessions must be a whole number .*, not '2'"),
        (provider("rcpt_per_second = inf"), r"rcpt_per_second must be a number above 0"),
        (provider("rcpt_per_hour = 1\nrcpt_per_minute = 1"), r"sets both rcpt_per_hour and"),
        (provider("cool_down = 9000"), r"the host limit max_cool_down \(3600 s\) must be at least"),
        ('[[provider]]\nname = "Acme"', r"needs hosts = \[.*\], a list of host patterns"),
        ('[[provider]]\nname = "Acme"\nhosts = []', r"needs hosts"),
        (
            '[[provider]]\nname = "Acme"\nhosts = ["mx*.acme.test"]',
            r"has the host pattern 'mx\*.acme.test'; write an exact host name",
        ),
        ('[[provider]]\nname = "Acme"\nhosts = ["*"]', r"has the host pattern '\*'"),
    ],
)
def test_bad_politeness_files_are_explained(text: str, message: str) -> None:
    """Every mistake in a politeness file is a sentence naming it and the fix."""
    with pytest.raises(ValueError, match=message):
        Politeness.packaged(extra=text, extra_source="the user file")


def test_packaged_file_parses_with_every_rule_complete() -> None:
    """The packaged file parses; every rule names a provider and a valid pattern."""
    rules = Politeness.packaged().rules
    assert len(rules) >= 10
    assert all(name and pattern.startswith("*.") for pattern, _, name in rules)


# --- properties ----------------------------------------------------------------------


@st.composite
def limits_strategy(draw: st.DrawFn) -> HostLimits:
    cool_down = draw(st.floats(0.5, 100.0))
    return HostLimits(
        rcpt_per_second=draw(st.floats(0.01, 50.0)),
        rcpt_burst=draw(st.integers(1, 40)),
        connections_per_minute=draw(st.floats(0.5, 600.0)),
        connection_burst=draw(st.integers(1, 5)),
        decrease=draw(st.floats(0.1, 0.9)),
        increase=draw(st.floats(0.01, 1.0)),
        min_factor=draw(st.floats(0.01, 1.0)),
        failure_threshold=draw(st.integers(1, 6)),
        cool_down=cool_down,
        max_cool_down=cool_down * draw(st.floats(1.0, 8.0)),
    )


tokens_strategy = st.none() | st.floats(-50.0, 1000.0)
state_strategy = st.builds(
    HostState,
    factor=st.floats(-1.0, 3.0),  # even a damaged factor must not loosen the budget
    rcpt_tokens=tokens_strategy,
    connection_tokens=tokens_strategy,
    updated_at=st.floats(NOW - 1000.0, NOW + 10.0),
    failures=st.integers(0, 10),
    paused_until=st.just(0.0) | st.floats(NOW - 100.0, NOW + 100.0),
    cool_down=st.just(0.0) | st.floats(0.5, 500.0),
)
step_strategy = st.just(0.0) | st.floats(0.0, 30.0)
take_op = st.tuples(st.just("take"), st.integers(0, 60), st.sampled_from([0.0, 0.25, 0.9]))
settle_op = st.tuples(st.just("settle"), st.integers(0, 4), st.sampled_from(list(Signal)))
ops_strategy = st.lists(st.tuples(step_strategy, take_op | settle_op), min_size=1, max_size=60)


def run(
    state: HostState, limits: HostLimits, ops: list[tuple[float, tuple[str, int, Any]]]
) -> tuple[list[tuple[float, int]], list[HostState]]:
    """Apply ``ops`` from NOW on; return (time, granted) of each take and every state."""
    now = NOW
    grants: list[tuple[float, int]] = []
    states: list[HostState] = []
    for step, (kind, amount, option) in ops:
        now += step
        if kind == "take":
            granted, state = take(state, limits, now, amount, reserve=option)
            assert 0 <= granted <= amount
            grants.append((now, granted))
        else:
            state, _ = settle(state, limits, now, connections=amount, signal=option)
        states.append(state)
    return grants, states


@settings(max_examples=1000, deadline=None)
@given(limits=limits_strategy(), state=state_strategy, ops=ops_strategy)
def test_no_window_gets_more_than_burst_plus_rate(
    limits: HostLimits, state: HostState, ops: list[tuple[float, tuple[str, int, Any]]]
) -> None:
    """THE politeness guarantee: any [t, t+T] holds at most burst + rate × T granted RCPTs."""
    grants, _ = run(state, limits, ops)
    for first, (start, _) in enumerate(grants):
        total = 0
        for end, granted in grants[first:]:
            total += granted
            assert total <= limits.rcpt_burst + limits.rcpt_per_second * (end - start) + EPSILON


@settings(max_examples=200, deadline=None)
@given(limits=limits_strategy(), ops=ops_strategy)
def test_a_steady_taker_is_held_to_the_rate(
    limits: HostLimits, ops: list[tuple[float, tuple[str, int, Any]]]
) -> None:
    """Taking at every step, a fresh host's total never passes burst + rate × elapsed."""
    greedy = [(step, ("take", 10**6, 0.0)) for step, _ in ops]
    grants, _ = run(HostState(), limits, greedy)
    assert sum(g for _, g in grants) <= limits.ceiling(grants[-1][0] - NOW) + EPSILON


@settings(max_examples=200, deadline=None)
@given(limits=limits_strategy(), state=state_strategy, ops=ops_strategy)
def test_factor_stays_between_min_factor_and_one(
    limits: HostLimits, state: HostState, ops: list[tuple[float, tuple[str, int, Any]]]
) -> None:
    """AIMD never takes the factor below min_factor nor above 1."""
    _, states = run(state, limits, ops)
    assert all(limits.min_factor <= s.factor <= 1.0 for s in states)


@given(state=state_strategy, last_change=st.text(max_size=80), counts=st.integers(0, 10**9))
def test_state_round_trips_through_json(state: HostState, last_change: str, counts: int) -> None:
    """to_dict → JSON → from_dict gives the same state."""
    state = dataclasses.replace(state, last_change=last_change, rcpts=counts, throttles=counts)
    assert HostState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


@settings(max_examples=300, deadline=None)
@given(
    limits=limits_strategy(),
    state=state_strategy,
    reserve=st.sampled_from([0.0, 0.25, 0.6]),
    at=st.floats(0.0, 50.0),
)
def test_wait_for_is_monotone_and_enough(
    limits: HostLimits, state: HostState, reserve: float, at: float
) -> None:
    """After taking all there is, a take at now + wait_for(n) grants n (as the bucket allows).

    The waits never decrease with n, are positive and finite.
    """
    now = NOW + at
    _, state = take(state, limits, now, 10**6, reserve=reserve)
    capacity = max(1.0, limits.rcpt_burst * min(1.0, max(limits.min_factor, state.factor)))
    room = math.floor(capacity - min(reserve * capacity, capacity - 1.0))
    waits = [wait_for(state, limits, now, n, reserve=reserve) for n in range(1, room + 3)]
    assert all(0 < wait < math.inf for wait in waits)
    assert waits == sorted(waits)
    for n, wait in enumerate(waits, start=1):
        granted, _ = take(state, limits, now + wait, n, reserve=reserve)
        assert granted == min(n, room)
