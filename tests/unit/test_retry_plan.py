"""After an attempt: emit the verdict, or try again through a tier (core.retry.plan)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.address import Address, parse_address
from streams.core.mx import TEMPORARY_DNS, DnsProblem
from streams.core.probe import SessionFailure
from streams.core.replies import Phase, SmtpReply
from streams.core.retry import (
    DEFAULT_ATTEMPTS,
    Again,
    Attempt,
    Cause,
    Emit,
    RetryPolicy,
    plan,
)
from streams.core.verdict import Facts, Reason, Status, Verdict, decide

T0 = 1_700_000_000.0
EMAIL = "user@example.org"
_PARSED = parse_address(EMAIL)
assert isinstance(_PARSED, Address)
ADDRESS: Address = _PARSED
POLICY = RetryPolicy()  # delays 60, 300, 900, 1800; max age 7200


def smtp_verdict(code: int, enhanced: str, text: str, *, sessions: int = 1) -> Verdict:
    """The verdict decide() gives a RCPT reply (the real rules, not a stand-in)."""
    reply = SmtpReply.from_message(code, f"{enhanced} {text}")
    facts = Facts(
        email=EMAIL,
        address=ADDRESS,
        reply=reply,
        phase=Phase.RCPT,
        mail_host="mx.example.org",
        attempts=sessions,
    )
    return decide(facts)


def dns_verdict(problem: DnsProblem) -> Verdict:
    return decide(Facts(email=EMAIL, address=ADDRESS, dns=problem))


GREYLISTED = smtp_verdict(450, "4.7.1", "Greylisted, try again later")
MAILBOX_UNKNOWN = smtp_verdict(550, "5.1.1", "No such user")
ACCEPTED = smtp_verdict(250, "2.1.5", "OK")
HELD = decide(
    Facts(email=EMAIL, address=ADDRESS, failure=SessionFailure.DEFERRED, mail_host="mx")
)


def attempt(verdict: Verdict, **changes: object) -> Attempt:
    fields: dict[str, object] = {"verdict": verdict, "first_seen": T0}
    fields.update(changes)
    return Attempt(**fields)  # type: ignore[arg-type]


def test_the_fixtures_are_what_their_names_say() -> None:
    """The verdicts below are decided by the real rules (so the tables test plan, not them)."""
    assert GREYLISTED.reason is Reason.GREYLISTED
    assert HELD.reason is Reason.THROTTLED
    assert MAILBOX_UNKNOWN.reason is Reason.MAILBOX_NOT_FOUND
    assert ACCEPTED.status is Status.DELIVERABLE


@pytest.mark.parametrize("verdict", [MAILBOX_UNKNOWN, ACCEPTED], ids=["550", "250"])
def test_a_final_reply_is_emitted(verdict: Verdict) -> None:
    """A 5xx that names the mailbox, or a 250, is the verdict at once."""
    assert isinstance(plan(POLICY, attempt(verdict), T0), Emit)


def test_a_greylisted_reply_goes_to_the_first_tier() -> None:
    """The first greylisting waits the first tier's delay, and spends a probe round."""
    decision = plan(POLICY, attempt(GREYLISTED), T0 + 5)
    assert decision == Again(
        cause=Cause.GREYLISTED,
        tier=0,
        due_at=T0 + 5 + 60,
        verdict=GREYLISTED,
        retries={"greylisted": 1},
        new_round=True,
    )


@pytest.mark.parametrize(("done", "tier"), [(0, 0), (1, 1), (2, 2), (3, 3)])
def test_each_retry_waits_in_the_next_tier(done: int, tier: int) -> None:
    """The n-th greylisting waits in tier n (delays 60, 300, 900, 1800)."""
    decision = plan(POLICY, attempt(GREYLISTED, retries={"greylisted": done}), T0)
    assert isinstance(decision, Again)
    assert (decision.tier, decision.due_at) == (tier, T0 + POLICY.delays[tier])
    assert decision.retries == {"greylisted": done + 1}


def test_past_the_attempt_limit_the_last_reason_stands() -> None:
    """After the cause's attempts (4 for greylisting) the verdict is emitted as it is."""
    limit = DEFAULT_ATTEMPTS[Cause.GREYLISTED]
    decision = plan(POLICY, attempt(GREYLISTED, retries={"greylisted": limit}), T0)
    assert isinstance(decision, Emit)
    assert decision.verdict.reason is Reason.GREYLISTED
    assert decision.verdict.status is Status.UNKNOWN


def test_no_retry_is_due_past_the_maximum_age() -> None:
    """A retry that would be due after first_seen + max_age is not made."""
    policy = RetryPolicy(max_age=100.0)
    assert isinstance(plan(policy, attempt(GREYLISTED, first_seen=T0), T0 + 41), Emit)
    assert isinstance(plan(policy, attempt(GREYLISTED, first_seen=T0), T0 + 40), Again)


def test_counts_of_other_causes_are_kept() -> None:
    """Each cause counts on its own: a timeout after two budget deferrals is its first."""
    timed_out = decide(
        Facts(email=EMAIL, address=ADDRESS, failure=SessionFailure.TIMEOUT, attempts=1)
    )
    assert timed_out.reason is Reason.TIMEOUT
    decision = plan(POLICY, attempt(timed_out, retries={"budget": 2}), T0)
    assert isinstance(decision, Again)
    assert decision.cause is Cause.TIMEOUT
    assert decision.retries == {"budget": 2, "timeout": 1}


def test_the_evidence_counts_the_sessions_of_every_attempt() -> None:
    """A probe's verdict carries its own sessions plus those of the earlier attempts."""
    unknown_user = smtp_verdict(550, "5.1.1", "No such user", sessions=2)
    decision = plan(POLICY, attempt(unknown_user, earlier_sessions=3), T0)
    assert isinstance(decision, Emit)
    assert decision.verdict.evidence.attempts == 5
    again = plan(POLICY, attempt(GREYLISTED, earlier_sessions=4), T0)
    assert isinstance(again, Again)
    assert again.verdict.evidence.attempts == GREYLISTED.evidence.attempts + 4


@pytest.mark.parametrize("problem", sorted(TEMPORARY_DNS))
def test_a_temporary_dns_failure_is_retried_as_dns(problem: DnsProblem) -> None:
    """SERVFAIL and a DNS timeout retry as Cause.DNS (its own limit), not as a timeout."""
    decision = plan(POLICY, attempt(dns_verdict(problem), dns=problem), T0)
    assert isinstance(decision, Again)
    assert decision.cause is Cause.DNS
    assert decision.new_round


def test_dns_retries_stop_at_their_limit() -> None:
    """Past the DNS attempts, the DNS verdict stands (unknown, never undeliverable)."""
    limit = DEFAULT_ATTEMPTS[Cause.DNS]
    servfail = dns_verdict(DnsProblem.SERVFAIL)
    decision = plan(POLICY, attempt(servfail, dns=DnsProblem.SERVFAIL, retries={"dns": limit}), T0)
    assert decision == Emit(servfail)
    assert servfail.status is Status.UNKNOWN


@pytest.mark.parametrize("problem", [p for p in DnsProblem if p not in TEMPORARY_DNS])
def test_a_dns_fact_is_final(problem: DnsProblem) -> None:
    """NXDOMAIN, null MX, no mail server, private MX: asking again changes nothing."""
    verdict = dns_verdict(problem)
    assert plan(POLICY, attempt(verdict, dns=problem), T0) == Emit(verdict)


def test_a_deferral_is_due_when_the_budget_allows() -> None:
    """Held back by the host's budget: due after the wait, in the first tier that long."""
    decision = plan(POLICY, attempt(HELD, deferred_for=90.0), T0)
    assert isinstance(decision, Again)
    assert (decision.cause, decision.tier, decision.due_at) == (Cause.BUDGET, 1, T0 + 90)
    assert not decision.new_round  # no probe was made
    assert decision.verdict == HELD


def test_a_deferral_keeps_the_verdict_it_stands_on() -> None:
    """A deferral neither re-counts sessions nor changes the verdict it carries."""
    decision = plan(POLICY, attempt(GREYLISTED, deferred_for=1.0, earlier_sessions=9), T0)
    assert isinstance(decision, Again)
    assert decision.verdict == GREYLISTED


def test_a_deferral_past_its_limit_emits_what_it_stands_on() -> None:
    """Out of budget retries: the verdict it had (here: greylisted) is final."""
    limit = DEFAULT_ATTEMPTS[Cause.BUDGET]
    decision = plan(POLICY, attempt(GREYLISTED, deferred_for=1.0, retries={"budget": limit}), T0)
    assert decision == Emit(GREYLISTED)


@given(
    done=st.integers(min_value=0, max_value=10),
    elapsed=st.floats(min_value=0, max_value=10_000),
    reason_code=st.sampled_from([(450, "4.7.1"), (421, "4.7.0"), (451, "4.3.0"), (550, "5.1.1")]),
)
def test_no_plan_is_due_past_the_max_age_or_the_limit(
    done: int, elapsed: float, reason_code: tuple[int, str]
) -> None:
    """Whatever the history, a retry is due within the max age and within the limit."""
    verdict = smtp_verdict(*reason_code, "text")
    decision = plan(POLICY, attempt(verdict, retries={c.value: done for c in Cause}), T0 + elapsed)
    if isinstance(decision, Again):
        assert decision.due_at <= T0 + POLICY.max_age
        assert decision.retries[decision.cause.value] == done + 1
        assert done + 1 <= DEFAULT_ATTEMPTS[decision.cause]
        assert decision.verdict.status is not Status.UNDELIVERABLE
    else:
        assert dataclasses.replace(decision.verdict, evidence=verdict.evidence) == verdict
