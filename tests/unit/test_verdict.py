"""Verdict rules: facts → status, reason, confidence, flags, evidence."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.address import Address, SyntaxProblem
from streams.core.catchall import CatchAll
from streams.core.lists import Signals
from streams.core.mx import DnsProblem
from streams.core.replies import Phase, SmtpReply
from streams.core.verdict import (
    REPLY_TEXT_LIMIT,
    Facts,
    Reason,
    SessionFailure,
    Status,
    decide,
)

ADDRESS = Address(
    original="ann@example.com",
    local_part="ann",
    domain="example.com",
    ascii_domain="example.com",
    normalized="ann@example.com",
    ascii_email="ann@example.com",
    smtputf8=False,
)
PLAIN = Signals(disposable=False, role=False, free_provider=False, did_you_mean=None)


def facts(**kwargs: object) -> Facts:
    """Facts for ann@example.com with plain signals, overridden by ``kwargs``."""
    base: dict[str, object] = {"email": "ann@example.com", "address": ADDRESS, "signals": PLAIN}
    base.update(kwargs)
    return Facts(**base)  # type: ignore[arg-type]


def rcpt(code: int, message: str = "", catch_all: CatchAll = CatchAll.UNKNOWN) -> Facts:
    return facts(
        reply=SmtpReply.from_message(code, message),
        phase=Phase.RCPT,
        mail_host="mx.example.com",
        catch_all=catch_all,
        attempts=1,
    )


@pytest.mark.parametrize(
    ("given_facts", "status", "reason"),
    [
        (
            facts(address=None, syntax=SyntaxProblem("missing_at", "No @.")),
            Status.UNDELIVERABLE,
            Reason.INVALID_SYNTAX,
        ),
        (facts(dns=DnsProblem.NXDOMAIN), Status.UNDELIVERABLE, Reason.NO_SUCH_DOMAIN),
        (facts(dns=DnsProblem.NULL_MX), Status.UNDELIVERABLE, Reason.NULL_MX),
        (facts(dns=DnsProblem.NO_MAIL_SERVER), Status.UNDELIVERABLE, Reason.NO_MAIL_SERVER),
        (facts(dns=DnsProblem.SERVFAIL), Status.UNKNOWN, Reason.DNS_ERROR),
        (facts(dns=DnsProblem.TIMEOUT), Status.UNKNOWN, Reason.TIMEOUT),
        (facts(dns=DnsProblem.PRIVATE_MX), Status.UNKNOWN, Reason.PRIVATE_MX),
        (facts(failure=SessionFailure.TIMEOUT), Status.UNKNOWN, Reason.TIMEOUT),
        (facts(failure=SessionFailure.CONNECTION_FAILED), Status.UNKNOWN, Reason.CONNECTION_FAILED),
        (facts(failure=SessionFailure.DISCONNECTED), Status.UNKNOWN, Reason.DISCONNECTED),
        (facts(failure=SessionFailure.PROTOCOL_ERROR), Status.UNKNOWN, Reason.PROTOCOL_ERROR),
        (facts(failure=SessionFailure.DEFERRED), Status.UNKNOWN, Reason.THROTTLED),
        (rcpt(250, "2.1.5 Ok", CatchAll.REJECTS_UNKNOWN), Status.DELIVERABLE, Reason.ACCEPTED),
        (rcpt(250, "2.1.5 Ok", CatchAll.UNKNOWN), Status.DELIVERABLE, Reason.ACCEPTED),
        (rcpt(251, "2.1.5 User not local; will forward"), Status.DELIVERABLE, Reason.ACCEPTED),
        (rcpt(250, "2.1.5 Ok", CatchAll.ACCEPTS_ALL), Status.RISKY, Reason.ACCEPT_ALL),
        (rcpt(252, "2.1.5 Cannot VRFY user"), Status.RISKY, Reason.CANNOT_VERIFY),
        (rcpt(550, "5.1.1 User unknown"), Status.UNDELIVERABLE, Reason.MAILBOX_NOT_FOUND),
        (
            rcpt(550, "Requested action not taken: mailbox unavailable"),
            Status.UNDELIVERABLE,
            Reason.MAILBOX_NOT_FOUND,
        ),
        (
            rcpt(550, "5.2.1 The email account that you tried to reach is disabled."),
            Status.UNDELIVERABLE,
            Reason.MAILBOX_DISABLED,
        ),
        (rcpt(552, "5.2.2 Mailbox full"), Status.RISKY, Reason.MAILBOX_FULL),
        (
            rcpt(450, "4.7.1 <ann@example.com>: Recipient address rejected: Greylisted"),
            Status.UNKNOWN,
            Reason.GREYLISTED,
        ),
        (rcpt(421, "4.7.0 Too many connections"), Status.UNKNOWN, Reason.THROTTLED),
        (
            rcpt(
                554,
                "5.7.1 Service unavailable; Client host [1.2.3.4] blocked using zen.spamhaus.org",
            ),
            Status.UNKNOWN,
            Reason.BLOCKED,
        ),
        (rcpt(550, "5.7.1 Relaying denied"), Status.UNKNOWN, Reason.RELAY_DENIED),
        (rcpt(451, "4.3.0 Temporary local problem"), Status.UNKNOWN, Reason.TEMPORARY_FAILURE),
        (rcpt(554, "Transaction failed"), Status.UNKNOWN, Reason.REJECTED),
        (rcpt(500, "5.5.2 Syntax error"), Status.UNKNOWN, Reason.PROTOCOL_ERROR),
    ],
)
def test_rules(given_facts: Facts, status: Status, reason: Reason) -> None:
    """Each kind of fact gives its status and reason."""
    verdict = decide(given_facts)
    assert (verdict.status, verdict.reason) == (status, reason)


def test_null_sender_refused_at_mail_is_unknown() -> None:
    """A refused MAIL FROM says nothing of the mailbox."""
    verdict = decide(
        facts(
            reply=SmtpReply.from_message(550, "5.7.1 <>: Sender address rejected"), phase=Phase.MAIL
        )
    )
    assert (verdict.status, verdict.reason) == (Status.UNKNOWN, Reason.NULL_SENDER_REFUSED)


def test_421_banner_is_throttled() -> None:
    """A 421 greeting is rate limiting, not an answer about the mailbox."""
    verdict = decide(
        facts(reply=SmtpReply.from_message(421, "4.7.0 Try later"), phase=Phase.CONNECT)
    )
    assert (verdict.status, verdict.reason) == (Status.UNKNOWN, Reason.THROTTLED)


def test_2xx_before_rcpt_is_never_accepted() -> None:
    """A session that stopped on a 2xx before RCPT cannot make an address deliverable."""
    verdict = decide(facts(reply=SmtpReply.from_message(250, "Ok"), phase=Phase.MAIL))
    assert verdict.status is Status.UNKNOWN


def test_disposable_accepted_is_risky() -> None:
    """A disposable domain's accepted mailbox is risky/disposable, flagged."""
    signals = Signals(disposable=True, role=False, free_provider=False, did_you_mean=None)
    verdict = decide(facts(signals=signals, reply=SmtpReply(250, "Ok"), phase=Phase.RCPT))
    assert (verdict.status, verdict.reason) == (Status.RISKY, Reason.DISPOSABLE)
    assert verdict.flags.disposable


def test_flags_follow_signals_and_catch_all() -> None:
    """Role and free-provider flags come from signals; accept_all from the catch-all state."""
    signals = Signals(disposable=False, role=True, free_provider=True, did_you_mean="ann@gmail.com")
    verdict = decide(
        facts(
            signals=signals,
            reply=SmtpReply(250, "Ok"),
            phase=Phase.RCPT,
            catch_all=CatchAll.ACCEPTS_ALL,
        )
    )
    assert verdict.flags.role and verdict.flags.free_provider and verdict.flags.accept_all
    assert not verdict.flags.disposable
    assert verdict.did_you_mean == "ann@gmail.com"


def test_confidence_reflects_catch_all_knowledge() -> None:
    """An accept from a host known to reject strangers is surer than from an unprobed host."""
    sure = decide(rcpt(250, "Ok", CatchAll.REJECTS_UNKNOWN)).confidence
    unsure = decide(rcpt(250, "Ok", CatchAll.UNKNOWN)).confidence
    accept_all = decide(rcpt(250, "Ok", CatchAll.ACCEPTS_ALL)).confidence
    assert sure > unsure > accept_all


def test_enhanced_not_found_is_surer_than_bare_550() -> None:
    """A 5.1.1 is stronger evidence than a bare 550."""
    strong = decide(rcpt(550, "5.1.1 User unknown")).confidence
    weak = decide(rcpt(550, "mailbox unavailable")).confidence
    assert strong > weak


def test_evidence_carries_the_reply_bounded() -> None:
    """Evidence keeps host, code, enhanced status and text cut to the limit."""
    verdict = decide(rcpt(550, "5.1.1 " + "x" * 5000))
    evidence = verdict.evidence
    assert evidence.mail_host == "mx.example.com"
    assert (evidence.reply_code, evidence.enhanced_status, evidence.phase) == (550, "5.1.1", "rcpt")
    assert evidence.reply_text is not None and len(evidence.reply_text) == REPLY_TEXT_LIMIT
    assert evidence.attempts == 1


def test_to_dict_is_json_ready() -> None:
    """to_dict gives plain strings for enums and nested dicts for flags and evidence."""
    data = decide(rcpt(250, "2.1.5 Ok")).to_dict()
    assert data["status"] == "deliverable" and data["reason"] == "accepted"
    assert data["email"] == "ann@example.com"
    assert set(data["flags"]) == {"disposable", "role", "free_provider", "accept_all"}
    assert data["evidence"]["reply_code"] == 250


@given(
    code=st.integers(400, 499),
    text=st.sampled_from(["User unknown", "mailbox unavailable", "no such user", "5.1.1 gone", ""]),
)
def test_a_4xx_is_never_undeliverable(code: int, text: str) -> None:
    """Whatever its words, a 4xx never makes an address undeliverable."""
    assert decide(rcpt(code, text)).status is not Status.UNDELIVERABLE


@given(
    code=st.sampled_from([550, 551, 553, 554]),
    detail=st.integers(0, 30),
    text=st.sampled_from(["User unknown", "blocked", "", "mailbox unavailable", "access denied"]),
)
def test_a_policy_code_is_never_undeliverable(code: int, detail: int, text: str) -> None:
    """A 5.7.x reply (policy) never makes an address undeliverable."""
    verdict = decide(rcpt(code, f"5.7.{detail} {text}"))
    assert verdict.status is not Status.UNDELIVERABLE


@given(
    st.sampled_from(list(SessionFailure)),
    st.sampled_from([DnsProblem.SERVFAIL, DnsProblem.TIMEOUT, None]),
)
def test_failures_are_never_undeliverable(failure: SessionFailure, dns: DnsProblem | None) -> None:
    """Timeouts, connection failures and SERVFAIL are unknown, never undeliverable."""
    verdict = decide(facts(failure=failure, dns=dns))
    assert verdict.status is Status.UNKNOWN
    assert verdict.confidence == 0.0
