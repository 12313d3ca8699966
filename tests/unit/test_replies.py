"""Specification of SMTP reply parsing and classification (streams.core.replies).

The corpus (tests/data/smtp_replies.tsv) holds real replies with their source;
the tables below state the rules of RFC 5321 §4.2, RFC 3463 and mxprobe's own, one
behaviour per row; the properties state the safety rules for any reply.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core import replies
from streams.core.replies import Phase, ReplyClass, SmtpReply, classify

CORPUS = Path(__file__).resolve().parent.parent / "data" / "smtp_replies.tsv"
COLUMNS = ["phase", "code", "message", "expected_class", "provenance"]


@dataclass(frozen=True)
class Sample:
    """One corpus row: a reply as aiosmtplib returns it, and what it means."""

    phase: Phase
    code: int
    message: str
    expected: ReplyClass
    provenance: str


def load_corpus() -> list[Sample]:
    """Read the corpus; a literal ``\\n`` in ``message`` is a line break."""
    header, *rows = CORPUS.read_text(encoding="utf-8").splitlines()
    assert header.split("\t") == COLUMNS
    samples = []
    for row in rows:
        phase, code, message, expected, provenance = row.split("\t")
        samples.append(
            Sample(
                Phase(phase),
                int(code),
                message.replace("\\n", "\n"),
                ReplyClass(expected),
                provenance,
            )
        )
    return samples


SAMPLES = load_corpus()


# --- The corpus --------------------------------------------------------------


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.provenance for s in SAMPLES])
def test_real_reply_is_classified_as_recorded(sample: Sample) -> None:
    """Each real-world reply classifies as the corpus records."""
    reply = SmtpReply.from_message(sample.code, sample.message)
    assert classify(reply, sample.phase) == sample.expected


def test_corpus_is_large_enough() -> None:
    """The corpus holds at least 80 replies, at least 60 of them to RCPT."""
    assert len(SAMPLES) >= 80
    assert sum(s.phase is Phase.RCPT for s in SAMPLES) >= 60


def test_corpus_covers_every_reply_class() -> None:
    """Every ReplyClass has at least one real sample."""
    assert {s.expected for s in SAMPLES} == set(ReplyClass)


def test_corpus_covers_every_phase() -> None:
    """Every Phase has at least one real sample."""
    assert {s.phase for s in SAMPLES} == set(Phase)


def test_corpus_rows_name_their_source() -> None:
    """Every row says where the reply comes from."""
    assert all(len(s.provenance) > 10 for s in SAMPLES)


def _text_patterns() -> Iterator[re.Pattern[str]]:
    """Every text pattern reachable from the classification tables."""
    for table in replies._CODES.values():
        for step in (*table.exact.values(), *table.by_class.values()):
            if isinstance(step, ReplyClass):
                continue
            for outcome in (step.default, *step.enhanced.values()):
                if outcome is not None:
                    for pattern, _ in outcome.refine:
                        yield pattern


TEXT_PATTERNS = list(dict.fromkeys(_text_patterns()))
CORPUS_TEXTS = [SmtpReply.from_message(s.code, s.message).text for s in SAMPLES]


def test_the_tables_have_text_patterns() -> None:
    """The walk over the tables finds the text patterns (guards the test below)."""
    assert len(TEXT_PATTERNS) > 40


@pytest.mark.parametrize("pattern", TEXT_PATTERNS, ids=[p.pattern for p in TEXT_PATTERNS])
def test_every_text_pattern_has_a_real_sample(pattern: re.Pattern[str]) -> None:
    """Each text pattern matches the text of at least one corpus reply (STYLE rule 1)."""
    assert any(pattern.search(text) for text in CORPUS_TEXTS)


# --- Parsing: SmtpReply.from_message ------------------------------------------

PARSE_CASES = [
    (550, "5.1.1 User unknown", SmtpReply(550, "User unknown", "5.1.1")),
    (250, "  2.1.5 Ok  ", SmtpReply(250, "Ok", "2.1.5")),
    (550, "5.1.1\tUser unknown", SmtpReply(550, "User unknown", "5.1.1")),
    (550, "5.1.10 RecipientNotFound", SmtpReply(550, "RecipientNotFound", "5.1.10")),
    (550, "5.1.1", SmtpReply(550, "", "5.1.1")),
    (550, "5.1.1 first\n5.1.1 second", SmtpReply(550, "first\nsecond", "5.1.1")),
    (550, "5.1.1 first\n5.1.1  https://x", SmtpReply(550, "first\nhttps://x", "5.1.1")),
    (550, "5.1.1 first\nsecond", SmtpReply(550, "first\nsecond", "5.1.1")),
    (550, "5.1.1 first\n5.2.1 second", SmtpReply(550, "first\n5.2.1 second", "5.1.1")),
    (550, "5.1.1 first\n5.1.10 second", SmtpReply(550, "first\n5.1.10 second", "5.1.1")),
    (450, "5.1.1 User unknown", SmtpReply(450, "5.1.1 User unknown", None)),
    (550, "4.2.2 Over quota", SmtpReply(550, "4.2.2 Over quota", None)),
    (550, "5.1.1: User unknown", SmtpReply(550, "5.1.1: User unknown", None)),
    (550, "5.1234.1 odd", SmtpReply(550, "5.1234.1 odd", None)),
    (550, "#5.1.0 Address rejected.", SmtpReply(550, "#5.1.0 Address rejected.", None)),
    (550, "User unknown", SmtpReply(550, "User unknown", None)),
    (550, "", SmtpReply(550, "", None)),
    (0, "5.1.1 User unknown", SmtpReply(0, "5.1.1 User unknown", None)),
    (-1, "Malformed SMTP response line", SmtpReply(-1, "Malformed SMTP response line", None)),
    (550, "no mailbox here (#5.1.1)", SmtpReply(550, "no mailbox here (#5.1.1)", "5.1.1")),
    (
        511,
        "no mailbox (#5.1.1 - chkuser)",
        SmtpReply(511, "no mailbox (#5.1.1 - chkuser)", "5.1.1"),
    ),
    (553, "no relay (#5.7.1) ", SmtpReply(553, "no relay (#5.7.1)", "5.7.1")),
    (451, "temporary (#5.7.1)", SmtpReply(451, "temporary (#5.7.1)", None)),
    (553, "5.7.1 relay (#5.5.3)", SmtpReply(553, "relay (#5.5.3)", "5.7.1")),
    (550, "code (#5.1.1) in the middle", SmtpReply(550, "code (#5.1.1) in the middle", None)),
]


@pytest.mark.parametrize(("code", "message", "expected"), PARSE_CASES)
def test_from_message_splits_the_enhanced_status_code(
    code: int, message: str, expected: SmtpReply
) -> None:
    """A leading (or qmail trailing) RFC 3463 code of the reply's class is split off."""
    assert SmtpReply.from_message(code, message) == expected


# --- Classification tables ------------------------------------------------------

R = ReplyClass


def reply(code: int, text: str = "", enhanced: str | None = None) -> SmtpReply:
    return SmtpReply(code, text, enhanced)


RCPT_CASES = [
    # Acceptance (RFC 5321 §4.2.2, §3.5.3).
    (reply(250), R.ACCEPTED),
    (reply(250, "Ok", "2.1.5"), R.ACCEPTED),
    (reply(251, "User not local; will forward"), R.ACCEPTED),
    (reply(252, "Cannot VRFY user"), R.CANNOT_VERIFY),
    (reply(220, "ready"), R.PROTOCOL_ERROR),
    (reply(354, "Start mail input"), R.PROTOCOL_ERROR),
    # 550/551/553 naming the mailbox (RFC 3463 x.1.x; a 550 without policy wording).
    (reply(550, "whatever the server says", "5.1.1"), R.MAILBOX_NOT_FOUND),
    (reply(551, "moved", "5.1.6"), R.MAILBOX_NOT_FOUND),
    (reply(553, "bad mailbox syntax", "5.1.3"), R.MAILBOX_NOT_FOUND),
    (reply(554, "Recipient address rejected", "5.1.1"), R.MAILBOX_NOT_FOUND),
    (reply(550, "User unknown"), R.MAILBOX_NOT_FOUND),
    (reply(550, "No such user here"), R.MAILBOX_NOT_FOUND),
    (reply(550, "The account does not exist"), R.MAILBOX_NOT_FOUND),
    (reply(550, "Requested action not taken: mailbox unavailable"), R.MAILBOX_NOT_FOUND),
    (reply(550, "Recipient not found"), R.MAILBOX_NOT_FOUND),
    (reply(550, "Invalid recipient"), R.MAILBOX_NOT_FOUND),
    (reply(550, "Recipient address rejected: User unknown"), R.MAILBOX_NOT_FOUND),
    (reply(553, "Requested action not taken: mailbox name not allowed"), R.MAILBOX_NOT_FOUND),
    (reply(550, "Requested action not taken"), R.MAILBOX_NOT_FOUND),
    (reply(550, "Address rejected", "5.0.0"), R.MAILBOX_NOT_FOUND),
    # 551: the user exists elsewhere (RFC 5321 §3.4); 553 needs evidence too.
    (reply(551, "User not local"), R.PERMANENT_FAILURE),
    (reply(553, "Rejected"), R.PERMANENT_FAILURE),
    # 5.4.1 is a routing status unless it is Microsoft's directory wording.
    (reply(554, "no answer from host", "5.4.1"), R.PERMANENT_FAILURE),
    (reply(550, "Recipient address rejected: Access denied", "5.4.1"), R.MAILBOX_NOT_FOUND),
    (reply(550, "Relay Access Denied", "5.4.1"), R.RELAY_DENIED),
    # 554 without evidence is only a permanent failure.
    (reply(554, "Transaction failed"), R.PERMANENT_FAILURE),
    (reply(554, "Transaction failed", "5.0.0"), R.PERMANENT_FAILURE),
    (reply(554, "No such user"), R.MAILBOX_NOT_FOUND),
    (reply(550, "Service currently unavailable", "5.3.2"), R.PERMANENT_FAILURE),
    (reply(550, "Service unavailable"), R.PERMANENT_FAILURE),
    (reply(550, "Message too large", "5.2.3"), R.PERMANENT_FAILURE),
    # Full mailboxes (RFC 5321 452/552, RFC 3463 x.2.2).
    (reply(452), R.MAILBOX_FULL),
    (reply(552), R.MAILBOX_FULL),
    (reply(452, "Mailbox full", "4.2.2"), R.MAILBOX_FULL),
    (reply(550, "Mailbox full", "5.2.2"), R.MAILBOX_FULL),
    (reply(552, "Recipient overquota", "5.1.1"), R.MAILBOX_FULL),
    (reply(550, "Quota exceeded"), R.MAILBOX_FULL),
    (reply(450, "Mailbox is full"), R.MAILBOX_FULL),
    # Too many recipients (RFC 5321 §4.5.3.1.10, RFC 3463 x.5.3).
    (reply(452, "Error: too many recipients", "4.5.3"), R.TOO_MANY_RECIPIENTS),
    (reply(452, "Too many recipients"), R.TOO_MANY_RECIPIENTS),
    (reply(452, "Insufficient system storage", "4.3.1"), R.TEMPORARY_FAILURE),
    (reply(452, "Insufficient system storage"), R.TEMPORARY_FAILURE),
    # Disabled mailboxes (RFC 3463 x.2.1).
    (reply(550, "Mailbox disabled", "5.2.1"), R.MAILBOX_DISABLED),
    (reply(550, "This account is disabled"), R.MAILBOX_DISABLED),
    (reply(550, "User is inactive"), R.MAILBOX_DISABLED),
    # Greylisting and rate limits.
    (reply(450, "Mailbox busy", "4.2.1"), R.RATE_LIMITED),
    (reply(450, "Mailbox temporarily unavailable", "4.2.1"), R.TEMPORARY_FAILURE),
    (reply(450, "receiving mail at a rate that prevents delivery", "4.2.1"), R.RATE_LIMITED),
    (reply(450, "", "4.7.1"), R.GREYLISTED),
    (reply(451, "Please try again", "4.7.1"), R.GREYLISTED),
    (reply(451, "Greylisted, see http://postgrey.schweikert.ch/"), R.GREYLISTED),
    (reply(451, "Message temporarily deferred"), R.GREYLISTED),
    (reply(450, "Policy rejection, try again later", "4.7.0"), R.TEMPORARY_FAILURE),
    (reply(450, "Try again later", "4.7.0"), R.GREYLISTED),
    (reply(451, "Try again later"), R.TEMPORARY_FAILURE),
    (reply(450, "Client host rejected: cannot find your hostname", "4.7.1"), R.TEMPORARY_FAILURE),
    (reply(450, "Rate limit exceeded", "4.7.1"), R.RATE_LIMITED),
    (reply(451, "Too many connections from your IP", "4.7.0"), R.RATE_LIMITED),
    (reply(452, "Throttled, slow down", "4.7.0"), R.RATE_LIMITED),
    (reply(451, "Unexpected volume from your IP", "4.7.1"), R.RATE_LIMITED),
    (reply(451, "Please slow down", "4.7.0"), R.RATE_LIMITED),
    (reply(421, "Service not available"), R.RATE_LIMITED),
    # Other 4xx: retry later.
    (reply(450), R.TEMPORARY_FAILURE),
    (reply(451, "Requested action aborted: local error in processing"), R.TEMPORARY_FAILURE),
    (reply(451, "Temporary lookup failure", "4.3.0"), R.TEMPORARY_FAILURE),
    (reply(454, "TLS not available due to local problem", "4.7.0"), R.TEMPORARY_FAILURE),
    (reply(432, "queue stopped"), R.TEMPORARY_FAILURE),
    # Relay denial (RFC 3463 x.7.1 with relay wording).
    (reply(554, "Relay access denied", "5.7.1"), R.RELAY_DENIED),
    (reply(550, "Relaying denied", "5.7.1"), R.RELAY_DENIED),
    (reply(550, "We are not permitted to relay", "5.7.1"), R.RELAY_DENIED),
    (reply(550, "we do not relay", "5.7.1"), R.RELAY_DENIED),
    (reply(550, "Unable to relay recipient in non-accepted domain", "5.7.54"), R.RELAY_DENIED),
    (reply(550, "relay not permitted"), R.RELAY_DENIED),
    # Policy: 5.7.x and blocklists are never "mailbox not found".
    (reply(550, "User unknown", "5.7.1"), R.POLICY_BLOCK),
    (reply(550, "No such user!", "5.7.1"), R.POLICY_BLOCK),
    (reply(550, "User unknown; blocked using zen.spamhaus.org", "5.7.1"), R.POLICY_BLOCK),
    (reply(550, "Access denied", "5.7.0"), R.POLICY_BLOCK),
    (reply(550, "", "5.7.606"), R.POLICY_BLOCK),
    (reply(550, "User unknown; blocked using zen.spamhaus.org"), R.POLICY_BLOCK),
    (reply(550, "Your IP is on a blacklist"), R.POLICY_BLOCK),
    (reply(550, "Listed on our blocklist"), R.POLICY_BLOCK),
    (reply(550, "Listed in RBL"), R.POLICY_BLOCK),
    (reply(550, "see the DNSBL lookup"), R.POLICY_BLOCK),
    (reply(550, "Poor reputation, user unknown"), R.POLICY_BLOCK),
    (reply(550, "Looks like spam"), R.POLICY_BLOCK),
    (reply(550, "Rejected by policy"), R.POLICY_BLOCK),
    (reply(550, "Access denied"), R.POLICY_BLOCK),
    (reply(550, "Not authorized"), R.POLICY_BLOCK),
    (reply(550, "Too many connections from your IP"), R.POLICY_BLOCK),
    (reply(530, "Must issue a STARTTLS command first", "5.7.0"), R.POLICY_BLOCK),
    # The sender, not the recipient, was refused (delayed Postfix restrictions).
    (reply(554, "<>: Sender address rejected: Access denied", "5.7.1"), R.NULL_SENDER_REFUSED),
    (reply(550, "Sender address rejected: User unknown", "5.1.0"), R.NULL_SENDER_REFUSED),
    (reply(554, "Sender address rejected: Domain not found", "5.1.8"), R.NULL_SENDER_REFUSED),
    (reply(553, "Bad sender's mailbox address syntax", "5.1.7"), R.NULL_SENDER_REFUSED),
    (reply(511, "can't find a valid MX for sender domain", "5.1.1"), R.NULL_SENDER_REFUSED),
    (reply(550, "Sender verify failed"), R.NULL_SENDER_REFUSED),
    # Our command or the code itself is wrong (RFC 5321 §4.2.1-4.2.3).
    (reply(500, "Syntax error, command unrecognized"), R.PROTOCOL_ERROR),
    (reply(501, "Bad recipient address syntax", "5.1.3"), R.PROTOCOL_ERROR),
    (reply(502, "Command not implemented"), R.PROTOCOL_ERROR),
    (reply(503, "Need MAIL before RCPT", "5.5.1"), R.PROTOCOL_ERROR),
    (reply(504, "Command parameter not implemented"), R.PROTOCOL_ERROR),
    (reply(555, "MAIL FROM/RCPT TO parameters not recognized"), R.PROTOCOL_ERROR),
    (reply(550, "Protocol error", "5.5.1"), R.PROTOCOL_ERROR),
    (reply(199, "User unknown"), R.PROTOCOL_ERROR),
    (reply(299, "Ok"), R.PROTOCOL_ERROR),
    (reply(571, "User unknown"), R.PROTOCOL_ERROR),
    (reply(600, "User unknown"), R.PROTOCOL_ERROR),
    (reply(0, "User unknown"), R.PROTOCOL_ERROR),
    (reply(-1, "Malformed SMTP response line"), R.PROTOCOL_ERROR),
    (reply(5500, "User unknown"), R.PROTOCOL_ERROR),
    # An enhanced code of another class than the reply code is ignored (RFC 3463 §2).
    (reply(450, "Mailbox unavailable", "5.1.1"), R.TEMPORARY_FAILURE),
    (reply(550, "", "4.2.2"), R.MAILBOX_NOT_FOUND),
    (reply(550, "", "5.1"), R.MAILBOX_NOT_FOUND),
    (reply(550, "Mailbox full", "not a code"), R.MAILBOX_FULL),
]


@pytest.mark.parametrize(("reply", "expected"), RCPT_CASES)
def test_rcpt_reply_class(reply: SmtpReply, expected: ReplyClass) -> None:
    """A reply to RCPT TO classifies by code, then enhanced code, then text."""
    assert classify(reply, Phase.RCPT) == expected


def test_rcpt_is_the_default_phase() -> None:
    """Without a phase, a reply is read as answering RCPT TO."""
    assert classify(reply(252)) == R.CANNOT_VERIFY


CONNECT_CASES = [
    (reply(220, "mx.example.com ESMTP"), R.ACCEPTED),
    (reply(421, "Too many connections"), R.RATE_LIMITED),
    (reply(554, "No SMTP service here"), R.POLICY_BLOCK),
    (reply(550, "Go away", "5.7.1"), R.POLICY_BLOCK),
    (reply(553, "Connections not accepted", "5.7.1"), R.POLICY_BLOCK),
    (reply(550, "Your IP is blacklisted"), R.POLICY_BLOCK),
    (reply(521, "Host does not accept mail"), R.PERMANENT_FAILURE),
    (reply(550, "No such user here"), R.PERMANENT_FAILURE),
    (reply(450, "Service temporarily unavailable"), R.TEMPORARY_FAILURE),
    (reply(250, "Ok"), R.PROTOCOL_ERROR),
    (reply(600, "ready"), R.PROTOCOL_ERROR),
]


@pytest.mark.parametrize(("reply", "expected"), CONNECT_CASES)
def test_greeting_reply_class(reply: SmtpReply, expected: ReplyClass) -> None:
    """The greeting: 220 is service, 421 a rate limit, 554 and 5.7.x a block."""
    assert classify(reply, Phase.CONNECT) == expected


EHLO_CASES = [
    (reply(250, "mx.example.com\nPIPELINING\n8BITMIME"), R.ACCEPTED),
    (reply(421, "Too many errors", "4.7.0"), R.RATE_LIMITED),
    (reply(451, "Temporary failure"), R.TEMPORARY_FAILURE),
    (reply(500, "Command unrecognized"), R.PROTOCOL_ERROR),
    (reply(502, "Command not implemented"), R.PROTOCOL_ERROR),
    (reply(550, "Helo command rejected: Access denied", "5.7.1"), R.PROTOCOL_ERROR),
    (reply(354, "go ahead"), R.PROTOCOL_ERROR),
]


@pytest.mark.parametrize(("reply", "expected"), EHLO_CASES)
def test_ehlo_reply_class(reply: SmtpReply, expected: ReplyClass) -> None:
    """EHLO: any 5xx is a protocol error, so the caller can fall back to HELO."""
    assert classify(reply, Phase.EHLO) == expected


MAIL_CASES = [
    (reply(250, "Ok", "2.1.0"), R.ACCEPTED),
    (reply(550, "Client host [192.0.2.1] blocked using zen.spamhaus.org", "5.7.1"), R.POLICY_BLOCK),
    (reply(554, "Client host rejected: Access denied", "5.7.1"), R.POLICY_BLOCK),
    (reply(550, "Access denied, banned sending IP", "5.7.606"), R.POLICY_BLOCK),
    (reply(530, "Must issue a STARTTLS command first", "5.7.0"), R.POLICY_BLOCK),
    (reply(553, "Bad sender's mailbox address syntax", "5.1.7"), R.NULL_SENDER_REFUSED),
    (reply(553, "Bad sender's system address", "5.1.8"), R.NULL_SENDER_REFUSED),
    (reply(550, "<>: Sender address rejected", "5.7.1"), R.NULL_SENDER_REFUSED),
    (reply(550, "Null sender is not allowed"), R.NULL_SENDER_REFUSED),
    (reply(550, "Bounce address not accepted"), R.NULL_SENDER_REFUSED),
    (reply(550, "Access denied"), R.NULL_SENDER_REFUSED),
    (reply(501, "bogus mail from"), R.NULL_SENDER_REFUSED),
    (reply(501, "Bad sender address syntax", "5.1.7"), R.NULL_SENDER_REFUSED),
    (reply(501, "Syntax: MAIL FROM:<address>", "5.5.4"), R.PROTOCOL_ERROR),
    (reply(503, "Error: send HELO/EHLO first", "5.5.1"), R.PROTOCOL_ERROR),
    (reply(555, "Unsupported option", "5.5.4"), R.PROTOCOL_ERROR),
    (reply(550, "Protocol error", "5.5.1"), R.PROTOCOL_ERROR),
    (reply(450, "", "4.7.1"), R.GREYLISTED),
    (reply(451, "Greylisted, please try again later"), R.GREYLISTED),
    (reply(451, "Temporarily rate limited due to IP reputation", "4.7.650"), R.RATE_LIMITED),
    (reply(451, "Throttled"), R.RATE_LIMITED),
    (reply(451, "Sender domain DNS lookup failed"), R.TEMPORARY_FAILURE),
    (reply(452, "Insufficient system storage"), R.TEMPORARY_FAILURE),
    (reply(421, "Service not available"), R.RATE_LIMITED),
]


@pytest.mark.parametrize(("reply", "expected"), MAIL_CASES)
def test_mail_reply_class(reply: SmtpReply, expected: ReplyClass) -> None:
    """MAIL FROM: a 5xx refuses our sender unless it judges the client host."""
    assert classify(reply, Phase.MAIL) == expected


END_CASES = [
    (reply(250, "Ok", "2.0.0"), R.ACCEPTED),
    (reply(221, "Bye", "2.0.0"), R.ACCEPTED),
    (reply(421, "Service not available", "4.3.2"), R.RATE_LIMITED),
    (reply(450, "busy"), R.PROTOCOL_ERROR),
    (reply(500, "Command unrecognized"), R.PROTOCOL_ERROR),
    (reply(550, "User unknown"), R.PROTOCOL_ERROR),
]


@pytest.mark.parametrize("phase", [Phase.RSET, Phase.QUIT])
@pytest.mark.parametrize(("reply", "expected"), END_CASES)
def test_rset_and_quit_reply_class(reply: SmtpReply, expected: ReplyClass, phase: Phase) -> None:
    """RSET and QUIT: 2xx is done, 421 a rate limit, anything else a protocol error."""
    assert classify(reply, phase) == expected


@pytest.mark.parametrize("phase", list(Phase))
def test_421_is_a_rate_limit_in_every_phase(phase: Phase) -> None:
    """421 closes the channel (RFC 5321 §3.8): come back later, more slowly."""
    assert classify(reply(421, "Service not available, closing channel"), phase) == R.RATE_LIMITED


# --- Properties --------------------------------------------------------------------

MAILBOX_WORDING = [
    "User unknown",
    "No such user",
    "does not exist",
    "mailbox unavailable",
    "Recipient not found",
    "Invalid recipient",
    "Recipient address rejected: User unknown in local recipient table",
    "Unrouteable address",
    "account disabled",
    "User is inactive",
    "no mailbox here by that name",
]
POLICY_WORDING = [
    "blocked using zen.spamhaus.org",
    "Client host rejected",
    "listed on our blacklist",
    "on our block list",
    "RBL",
    "DNSBL",
    "poor reputation",
    "spam",
    "policy",
    "Access denied",
    "not authorized",
    "Administrative prohibition",
    "Relay access denied",
    "Sender address rejected",
]
OTHER_WORDING = [
    "Greylisted",
    "try again later",
    "rate limited",
    "too many connections",
    "over quota",
    "mailbox full",
    "too many recipients",
    "Service unavailable",
    "(#5.1.1)",
    "",
]
wording = st.sampled_from(MAILBOX_WORDING + POLICY_WORDING + OTHER_WORDING)
texts = st.lists(st.one_of(wording, st.text(max_size=20)), max_size=4).map(" ".join)
statuses = st.builds(
    "{}.{}.{}".format,
    st.sampled_from("245"),
    st.integers(min_value=0, max_value=9),
    st.integers(min_value=0, max_value=999),
)
phases = st.sampled_from(list(Phase))


@given(
    code=st.integers(min_value=400, max_value=499),
    enhanced=st.one_of(st.none(), statuses),
    text=texts,
    phase=phases,
)
def test_a_4xx_never_says_the_mailbox_is_gone(
    code: int, enhanced: str | None, text: str, phase: Phase
) -> None:
    """A 4xx is never mailbox_not_found or mailbox_disabled, whatever it says."""
    result = classify(SmtpReply(code, text, enhanced), phase)
    assert result not in {R.MAILBOX_NOT_FOUND, R.MAILBOX_DISABLED}


@given(
    code=st.integers(min_value=500, max_value=599),
    detail=st.integers(min_value=0, max_value=999),
    text=texts,
    phase=phases,
)
def test_a_security_status_never_says_the_mailbox_is_gone(
    code: int, detail: int, text: str, phase: Phase
) -> None:
    """A 5xx with a 5.7.x enhanced code is never mailbox_not_found."""
    result = classify(SmtpReply(code, text, f"5.7.{detail}"), phase)
    assert result not in {R.MAILBOX_NOT_FOUND, R.MAILBOX_DISABLED}


@given(
    code=st.sampled_from([550, 551, 553, 554]),
    enhanced=st.sampled_from([None, "5.0.0"]),
    mailbox=st.sampled_from(MAILBOX_WORDING),
    policy=st.sampled_from(POLICY_WORDING),
    policy_first=st.booleans(),
)
def test_policy_wording_beats_mailbox_wording(
    code: int, enhanced: str | None, mailbox: str, policy: str, policy_first: bool
) -> None:
    """A 5xx that carries policy wording is never mailbox_not_found, even beside "user unknown"."""
    text = f"{policy}; {mailbox}" if policy_first else f"{mailbox}; {policy}"
    assert classify(SmtpReply(code, text, enhanced), Phase.RCPT) != R.MAILBOX_NOT_FOUND


@given(code=st.integers(), text=st.text(), enhanced=st.one_of(st.none(), st.text()), phase=phases)
def test_classify_never_raises(code: int, text: str, enhanced: str | None, phase: Phase) -> None:
    """Any reply value classifies to some ReplyClass."""
    assert isinstance(classify(SmtpReply(code, text, enhanced), phase), ReplyClass)


ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


@given(code=st.integers(), message=st.text(st.characters(exclude_categories=())))
def test_from_message_never_raises(code: int, message: str) -> None:
    """Any code and any text (lone surrogates included) give a reply; a taken code agrees."""
    parsed = SmtpReply.from_message(code, message)
    assert parsed.code == code
    assert parsed.text == parsed.text.strip()
    if parsed.enhanced is not None:
        assert ENHANCED.fullmatch(parsed.enhanced)
        assert str(code)[0] == parsed.enhanced[0]


line_text = st.text(
    st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="#"),
    min_size=1,
    max_size=30,
).filter(lambda line: line == line.strip() and not line[0].isdigit())
lines = st.lists(line_text, min_size=1, max_size=4)


@st.composite
def code_and_status(draw: st.DrawFn) -> tuple[int, str]:
    code = draw(st.sampled_from((2, 4, 5))) * 100 + draw(st.integers(0, 99))  # RFC 3463 §2
    subject = draw(st.integers(min_value=0, max_value=999))
    detail = draw(st.integers(min_value=0, max_value=999))
    return code, f"{code // 100}.{subject}.{detail}"


@given(code_status=code_and_status(), body=lines, on_every_line=st.booleans())
def test_from_message_round_trips(
    code_status: tuple[int, str], body: list[str], on_every_line: bool
) -> None:
    """A message built from an enhanced code and a text parses back to both."""
    code, status = code_status
    separator = f"\n{status} " if on_every_line else "\n"
    message = f"{status} " + separator.join(body)
    assert SmtpReply.from_message(code, message) == SmtpReply(code, "\n".join(body), status)


@given(code=st.integers(min_value=200, max_value=599), body=lines)
def test_from_message_keeps_a_text_without_status_code(code: int, body: list[str]) -> None:
    """A text that starts with no status code (and ends with no qmail one) stays whole."""
    text = "\n".join(body)
    assert SmtpReply.from_message(code, text) == SmtpReply(code, text, None)


# --- Hostile replies ------------------------------------------------------------------
#
# from_message and classify together, as the adapter calls them, on what a
# hostile or broken server may send: any text, bytes that are not UTF-8 (as
# aiosmtplib decodes them, with surrogateescape), and very long text.

raw_bytes = st.binary(max_size=200).map(lambda data: data.decode("utf-8", "surrogateescape"))
any_text = st.text(st.characters(exclude_categories=()), max_size=200)
status_words = st.lists(st.one_of(wording, statuses, st.just("(#5.1.1)")), max_size=4).map(" ".join)
hostile_messages = st.one_of(any_text, raw_bytes, status_words, texts).map(str)


@given(code=st.integers(), message=hostile_messages, phase=phases)
def test_any_message_parses_and_classifies(code: int, message: str, phase: Phase) -> None:
    """classify(from_message(code, text)) gives a ReplyClass for any code and any text."""
    assert isinstance(classify(SmtpReply.from_message(code, message), phase), ReplyClass)


@given(
    code=st.integers(min_value=400, max_value=499),
    prefix=st.one_of(st.just(""), statuses.map("{} ".format)),
    message=hostile_messages,
    phase=phases,
)
def test_a_4xx_message_never_says_the_mailbox_is_gone(
    code: int, prefix: str, message: str, phase: Phase
) -> None:
    """A 4xx, whatever status code and words its text holds, is never a missing mailbox."""
    reply = SmtpReply.from_message(code, prefix + message)
    assert classify(reply, phase) not in {R.MAILBOX_NOT_FOUND, R.MAILBOX_DISABLED}


@given(code=st.integers(min_value=400, max_value=499), body=hostile_messages)
def test_a_4xx_message_never_takes_a_5xx_status_code(code: int, body: str) -> None:
    """A 5.x.x status in a 4xx reply stays text (RFC 3463 §2): the reply is not made permanent."""
    reply = SmtpReply.from_message(code, f"5.1.1 {body}")
    assert reply.enhanced is None or reply.enhanced.startswith("4.")


SIZE = 256 * 1024

# Shapes of a long reply text a broken or hostile server might send (the
# adapter bounds what it reads; classify must not depend on that for safety).
HUGE_REPLIES = {
    "one line": "x" * SIZE,
    "not UTF-8": (b"\xff\xfe" * (SIZE // 2)).decode("utf-8", "surrogateescape"),
    "mailbox wording, repeated": "5.1.1 User unknown\n" * (SIZE // 19),
    "qmail codes, repeated": "(#5.1.1) " * (SIZE // 9),
    "open qmail codes": "(#5.1.1 " * (SIZE // 8),
    "status-like digits": "5.5.5." * (SIZE // 6),
    "blanks before a qmail code": " " * SIZE + "(#5.1.1)",
}


@pytest.mark.parametrize("code", [450, 550])
@pytest.mark.parametrize("message", HUGE_REPLIES.values(), ids=HUGE_REPLIES.keys())
def test_a_long_reply_classifies_quickly(code: int, message: str) -> None:
    """256 kB of text classifies in well under seconds (no pattern backtracks without
    bound), and a 4xx still never says the mailbox is gone."""
    started = time.perf_counter()
    result = classify(SmtpReply.from_message(code, message), Phase.RCPT)
    assert time.perf_counter() - started < 5
    assert code >= 500 or result not in {R.MAILBOX_NOT_FOUND, R.MAILBOX_DISABLED}
