"""The SMTP session machine, without sockets: answers in, commands and outcomes out.

Each row scripts what the host (and the idle pool) answers, in order, to the
commands that need an answer, and gives the commands the machine must hand
out, written from RFC 5321 and the policy in ``streams.core.session``'s
docstring. Commands read ``take mx1 mx2`` (ask the idle pool), ``connect
mx1``, ``EHLO``, ``MAIL <>``, ``RCPT <a@x>``, ``RSET``, ``QUIT (why)``,
``close (why)`` (without QUIT), ``park after N`` (N RCPTs so far) and
``finished``. Outcomes read ``code@host`` or ``failure@host``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.probe import ProbeOutcome, SessionFailure
from streams.core.replies import Phase, SmtpReply
from streams.core.route import Target
from streams.core.session import SessionMachine
from streams.core.session_events import (
    Close,
    Command,
    Connect,
    Ehlo,
    Event,
    Failed,
    Finished,
    Helo,
    IdleTaken,
    Mail,
    NoIdle,
    Park,
    Quit,
    Rcpt,
    Replied,
    Rset,
    StartTls,
    TakeIdle,
    Unsendable,
)

MX1 = Target("mx1", "192.0.2.1")
MX2 = Target("mx2", "192.0.2.2")
MX3 = Target("mx3", "192.0.2.3")
PROBE = "probe@p.test"


def r(code: int, text: str = "", *, closed: bool = False, ext: Iterable[str] = ()) -> Replied:
    """The host's reply ``code text``."""
    return Replied(SmtpReply.from_message(code, text), frozenset(ext), closed)


BANNER = r(220, "mx ESMTP")
OK = r(250, "2.0.0 Ok")
UNKNOWN = r(550, "5.1.1 User unknown")
NULL_REFUSED_AT_MAIL = r(550, "5.7.1 <>: Sender address rejected")
NULL_REFUSED_AT_RCPT = r(554, "5.7.1 <>: Sender address rejected: Access denied")  # Postfix
TOO_MANY = r(452, "4.5.3 Error: too many recipients")
GO_AWAY = r(421, "4.7.0 Too many errors", closed=True)
NO = NoIdle()
DROP = Failed(SessionFailure.DISCONNECTED, "mx closed the connection.")
SLOW = Failed(SessionFailure.TIMEOUT, "mx did not complete its reply within 10 s.")
GARBLED = Failed(SessionFailure.PROTOCOL_ERROR, "mx sent a reply that is not a valid SMTP reply.")
REFUSED = Failed(SessionFailure.CONNECTION_FAILED, "Could not connect to mx: refused.")
UNSENDABLE = Unsendable("The address cannot be sent without SMTPUTF8.")
GREETED: list[Event] = [NO, BANNER, OK]  # no idle session; a 220, and 250 to EHLO


def machine(
    targets: Sequence[Target] = (MX1,), recipients: Sequence[str] = ("a@x",), **options: Any
) -> SessionMachine:
    """A machine with 50 sessions, 50 RCPTs per session and per transaction, a probe sender."""
    settings: dict[str, Any] = {
        "smtputf8": False,
        "max_sessions": 50,
        "rcpt_per_session": 50,
        "rcpt_per_transaction": 50,
        "mail_from": PROBE,
        "starttls": False,
    }
    return SessionMachine(targets, recipients, **{**settings, **options})


def render(command: Command) -> str:
    match command:
        case TakeIdle(targets=targets):
            return " ".join(["take", *(t.host for t in targets)])
        case Connect(target=target):
            return f"connect {target.host}"
        case Ehlo():
            return "EHLO"
        case Helo():
            return "HELO"
        case StartTls():
            return "STARTTLS"
        case Mail(sender=sender, smtputf8=utf8):
            return f"MAIL <{sender}>" + (" SMTPUTF8" if utf8 else "")
        case Rcpt(recipient=recipient, smtputf8=utf8):
            return f"RCPT <{recipient}>" + (" SMTPUTF8" if utf8 else "")
        case Rset():
            return "RSET"
        case Quit(why=why):
            return f"QUIT ({why})"
        case Close(why=why):
            return f"close ({why})"
        case Park(rcpts=rcpts):
            return f"park after {rcpts}"
        case Finished():
            return "finished"


def run(subject: SessionMachine, answers: Iterable[Event]) -> tuple[list[str], ProbeOutcome]:
    """Answer each command that needs it from ``answers``, until the machine finishes."""
    script = iter(answers)
    transcript: list[str] = []
    while True:
        command = subject.next_command()
        transcript.append(render(command))
        if isinstance(command, Finished):
            assert next(script, None) is None, f"answers left over after {transcript}"
            return transcript, command.outcome
        if not isinstance(command, Quit | Close | Park):
            answer = next(script, None)
            assert answer is not None, f"no answer scripted for {transcript[-1]} in {transcript}"
            subject.receive(answer)


def summary(outcome: ProbeOutcome) -> dict[str, str]:
    """Each recipient's reply code or failure, and the host it came from."""
    return {
        recipient: (str(o.reply.code) if o.reply else str(o.failure))
        + f"@{o.target.host if o.target else '-'}"
        for recipient, o in outcome.results.items()
    }


@dataclass(frozen=True)
class Case:
    """One row: the machine's options, the answers, and what must come of them."""

    says: str
    answers: list[Event]
    commands: str  # " | " between commands
    outcomes: dict[str, str]
    targets: tuple[Target, ...] = (MX1,)
    recipients: tuple[str, ...] = ("a@x",)
    options: dict[str, Any] = field(default_factory=dict)

    def run(self) -> tuple[list[str], ProbeOutcome]:
        return run(machine(self.targets, self.recipients, **self.options), self.answers)


def rows(*cases: Case) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("case", cases, ids=[c.says for c in cases])


# ---------------------------------------------------------------- finding a session

FINDING = (
    Case(
        "a parked session is checked with RSET, then asked with MAIL FROM",
        [IdleTaken(MX2, 3), OK, OK, OK],
        "take mx1 mx2 | RSET | MAIL <> | RCPT <a@x> | park after 4 | finished",
        {"a@x": "250@mx2"},
        targets=(MX1, MX2),
    ),
    Case(
        "an idle session that answers RSET with anything but 250 is QUIT; the next is taken",
        [
            IdleTaken(MX1, 1),
            r(421, "4.4.2 idle too long", closed=True),
            IdleTaken(MX1, 1),
            OK,
            OK,
            OK,
        ],
        (
            "take mx1 | RSET | QUIT (stale) | take mx1 | RSET | MAIL <> | RCPT <a@x>"
            " | park after 2 | finished"
        ),
        {"a@x": "250@mx1"},
    ),
    Case(
        "an idle session that does not answer RSET is closed without QUIT; a new one opened",
        [IdleTaken(MX1, 1), DROP, *GREETED, OK, OK],
        (
            "take mx1 | RSET | close (stale) | take mx1 | connect mx1 | EHLO | MAIL <>"
            " | RCPT <a@x> | park after 1 | finished"
        ),
        {"a@x": "250@mx1"},
    ),
    Case(
        "when no target can be connected to, the last failure is everyone's outcome",
        [NO, REFUSED, REFUSED],
        (
            "take mx1 mx2 | connect mx1 | close (failover) | connect mx2 | close (failover)"
            " | finished"
        ),
        {"a@x": "connection_failed@mx2", "b@x": "connection_failed@mx2"},
        targets=(MX1, MX2),
        recipients=("a@x", "b@x"),
    ),
    Case(
        "a greeting other than 220 moves on to the next target (RFC 5321 §5.1)",
        [NO, r(554, "5.7.1 no service"), BANNER, OK, OK, OK],
        (
            "take mx1 mx2 | connect mx1 | close (failover) | connect mx2 | EHLO | MAIL <>"
            " | RCPT <a@x> | park after 1 | finished"
        ),
        {"a@x": "250@mx2"},
        targets=(MX1, MX2),
    ),
    Case(
        "no greeting in time moves on to the next target",
        [NO, SLOW, BANNER, OK, OK, OK],
        (
            "take mx1 mx2 | connect mx1 | close (failover) | connect mx2 | EHLO | MAIL <>"
            " | RCPT <a@x> | park after 1 | finished"
        ),
        {"a@x": "250@mx2"},
        targets=(MX1, MX2),
    ),
    Case(
        "a refused greeting is the outcome when no target is left",
        [NO, r(554, "5.7.1 no service")],
        "take mx1 | connect mx1 | close (failover) | finished",
        {"a@x": "554@mx1"},
    ),
    Case(
        "EHLO refused: HELO instead (RFC 5321 §4.1.4)",
        [NO, BANNER, r(502, "5.5.1 Error: command not implemented"), OK, OK, OK],
        ("take mx1 | connect mx1 | EHLO | HELO | MAIL <> | RCPT <a@x> | park after 1 | finished"),
        {"a@x": "250@mx1"},
    ),
    Case(
        "EHLO answered 421: QUIT and the next target, no HELO",
        [NO, BANNER, GO_AWAY, BANNER, OK, OK, OK],
        (
            "take mx1 mx2 | connect mx1 | EHLO | QUIT (failover) | connect mx2 | EHLO | MAIL <>"
            " | RCPT <a@x> | park after 1 | finished"
        ),
        {"a@x": "250@mx2"},
        targets=(MX1, MX2),
    ),
    Case(
        "EHLO refused by a host that hung up: no HELO",
        [NO, BANNER, r(502, "5.5.1 no", closed=True)],
        "take mx1 | connect mx1 | EHLO | QUIT (failover) | finished",
        {"a@x": "502@mx1"},
    ),
    Case(
        "HELO refused too: QUIT, and HELO's reply is the outcome",
        [NO, BANNER, r(502, "5.5.1 no"), r(501, "5.5.2 Syntax error")],
        "take mx1 | connect mx1 | EHLO | HELO | QUIT (failover) | finished",
        {"a@x": "501@mx1"},
    ),
    Case(
        "an EHLO that times out is closed without QUIT",
        [NO, BANNER, SLOW],
        "take mx1 | connect mx1 | EHLO | close (failover) | finished",
        {"a@x": "timeout@mx1"},
    ),
    Case(
        "STARTTLS when configured and offered, then EHLO again, once (RFC 3207)",
        [
            NO,
            BANNER,
            r(250, ext={"starttls"}),
            r(220, "2.0.0 Ready"),
            r(250, ext={"starttls"}),
            OK,
            OK,
        ],
        (
            "take mx1 | connect mx1 | EHLO | STARTTLS | EHLO | MAIL <> | RCPT <a@x>"
            " | park after 1 | finished"
        ),
        {"a@x": "250@mx1"},
        options={"starttls": True},
    ),
    Case(
        "no STARTTLS when the host does not offer it",
        [*GREETED, OK, OK],
        "take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | park after 1 | finished",
        {"a@x": "250@mx1"},
        options={"starttls": True},
    ),
    Case(
        "no STARTTLS unless configured",
        [NO, BANNER, r(250, ext={"starttls"}), OK, OK],
        "take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | park after 1 | finished",
        {"a@x": "250@mx1"},
    ),
    Case(
        "a failed STARTTLS is closed and the next target tried",
        [NO, BANNER, r(250, ext={"starttls"}), GARBLED, BANNER, OK, OK, OK],
        (
            "take mx1 mx2 | connect mx1 | EHLO | STARTTLS | close (failover) | connect mx2 | EHLO"
            " | MAIL <> | RCPT <a@x> | park after 1 | finished"
        ),
        {"a@x": "250@mx2"},
        targets=(MX1, MX2),
        options={"starttls": True},
    ),
    Case(
        "no session budget: no connection at all",
        [NO],
        "take mx1 | finished",
        {"a@x": "disconnected@-"},
        options={"max_sessions": 0},
    ),
    Case(
        "no targets: a connection failure",
        [NO],
        "take | finished",
        {"a@x": "connection_failed@-"},
        targets=(),
    ),
)


@rows(*FINDING)
def test_finding_a_session(case: Case) -> None:
    """Idle sessions, connections, greetings and failover give the row's commands."""
    commands, outcome = case.run()
    assert " | ".join(commands) == case.commands
    assert summary(outcome) == case.outcomes


# ---------------------------------------------------------------- in a session

TRANSACTIONS = (
    Case(
        "every recipient in one transaction, then the session is parked",
        [*GREETED, OK, OK, UNKNOWN, OK],
        (
            "take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | RCPT <b@x> | RCPT <c@x>"
            " | park after 3 | finished"
        ),
        {"a@x": "250@mx1", "b@x": "550@mx1", "c@x": "250@mx1"},
        recipients=("a@x", "b@x", "c@x"),
    ),
    Case(
        "rcpt_per_transaction RCPTs, then RSET and a new MAIL for the rest",
        [*GREETED, OK, OK, OK, OK, OK, OK],
        (
            "take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | RCPT <b@x> | RSET | MAIL <>"
            " | RCPT <c@x> | park after 3 | finished"
        ),
        {"a@x": "250@mx1", "b@x": "250@mx1", "c@x": "250@mx1"},
        recipients=("a@x", "b@x", "c@x"),
        options={"rcpt_per_transaction": 2},
    ),
    Case(
        "a session that sent rcpt_per_session RCPTs is QUIT; the rest go to a new one",
        [*GREETED, OK, OK, OK, *GREETED, OK, OK],
        (
            "take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | RCPT <b@x> | QUIT (done)"
            " | take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <c@x> | park after 1 | finished"
        ),
        {"a@x": "250@mx1", "b@x": "250@mx1", "c@x": "250@mx1"},
        recipients=("a@x", "b@x", "c@x"),
        options={"rcpt_per_session": 2},
    ),
    Case(
        "a reused session counts the RCPTs it sent before",
        [IdleTaken(MX1, 2), OK, OK, OK, *GREETED, OK, OK],
        (
            "take mx1 | RSET | MAIL <> | RCPT <a@x> | QUIT (done) | take mx1 | connect mx1 | EHLO"
            " | MAIL <> | RCPT <b@x> | park after 1 | finished"
        ),
        {"a@x": "250@mx1", "b@x": "250@mx1"},
        recipients=("a@x", "b@x"),
        options={"rcpt_per_session": 3},
    ),
    Case(
        "the null sender refused at MAIL: RSET, then the probe sender",
        [*GREETED, NULL_REFUSED_AT_MAIL, OK, OK, OK],
        (
            "take mx1 | connect mx1 | EHLO | MAIL <> | RSET | MAIL <probe@p.test> | RCPT <a@x>"
            " | park after 1 | finished"
        ),
        {"a@x": "250@mx1"},
    ),
    Case(
        "once the null sender is refused, the session's next transactions use the probe sender",
        [*GREETED, NULL_REFUSED_AT_MAIL, OK, OK, OK, OK, OK, OK],
        (
            "take mx1 | connect mx1 | EHLO | MAIL <> | RSET | MAIL <probe@p.test> | RCPT <a@x>"
            " | RSET | MAIL <probe@p.test> | RCPT <b@x> | park after 2 | finished"
        ),
        {"a@x": "250@mx1", "b@x": "250@mx1"},
        recipients=("a@x", "b@x"),
        options={"rcpt_per_transaction": 1},
    ),
    Case(
        "the null sender refused and no probe sender configured: QUIT, the refusal answers all",
        [*GREETED, NULL_REFUSED_AT_MAIL],
        "take mx1 | connect mx1 | EHLO | MAIL <> | QUIT (refused) | finished",
        {"a@x": "550@mx1"},
        options={"mail_from": None},
    ),
    Case(
        "the probe sender refused as well: QUIT",
        [*GREETED, NULL_REFUSED_AT_MAIL, OK, r(553, "5.1.8 Sender domain unknown")],
        (
            "take mx1 | connect mx1 | EHLO | MAIL <> | RSET | MAIL <probe@p.test>"
            " | QUIT (refused) | finished"
        ),
        {"a@x": "553@mx1"},
    ),
    Case(
        "a refusal at MAIL that is not about the sender is not retried with the probe sender",
        [*GREETED, r(451, "4.3.0 Local error in processing")],
        "take mx1 mx2 | connect mx1 | EHLO | MAIL <> | QUIT (refused) | finished",
        {"a@x": "451@mx1"},
        targets=(MX1, MX2),
    ),
    Case(
        "421 at MAIL before any answer: QUIT and the next target",
        [*GREETED, GO_AWAY, NO, BANNER, OK, OK, OK],
        (
            "take mx1 mx2 | connect mx1 | EHLO | MAIL <> | QUIT (refused) | take mx2"
            " | connect mx2 | EHLO | MAIL <> | RCPT <a@x> | park after 1 | finished"
        ),
        {"a@x": "250@mx2"},
        targets=(MX1, MX2),
    ),
    Case(
        "the null sender refused at RCPT (Postfix): a new transaction with the probe sender",
        [*GREETED, OK, NULL_REFUSED_AT_RCPT, OK, OK, OK, OK],
        (
            "take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | RSET | MAIL <probe@p.test>"
            " | RCPT <a@x> | RCPT <b@x> | park after 3 | finished"
        ),
        {"a@x": "250@mx1", "b@x": "250@mx1"},
        recipients=("a@x", "b@x"),
    ),
    Case(
        "without a probe sender, a null-sender refusal at RCPT is the recipient's answer",
        [*GREETED, OK, NULL_REFUSED_AT_RCPT],
        "take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | park after 1 | finished",
        {"a@x": "554@mx1"},
        options={"mail_from": None},
    ),
    Case(
        "452 too many recipients (RFC 5321 §4.5.3.1.10): a new transaction for the rest",
        [*GREETED, OK, OK, TOO_MANY, OK, OK, OK, OK],
        (
            "take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | RCPT <b@x> | RSET | MAIL <>"
            " | RCPT <b@x> | RCPT <c@x> | park after 4 | finished"
        ),
        {"a@x": "250@mx1", "b@x": "250@mx1", "c@x": "250@mx1"},
        recipients=("a@x", "b@x", "c@x"),
    ),
    Case(
        "452 at a transaction's first RCPT after answers: QUIT, the rest in a new session",
        [*GREETED, OK, OK, OK, OK, TOO_MANY, *GREETED, OK, OK],
        (
            "take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | RSET | MAIL <> | RCPT <b@x>"
            " | QUIT (refused) | take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <b@x>"
            " | park after 1 | finished"
        ),
        {"a@x": "250@mx1", "b@x": "250@mx1"},
        recipients=("a@x", "b@x"),
        options={"rcpt_per_transaction": 1},
    ),
    Case(
        "452 at the first RCPT with nobody answered: the 452 answers all",
        [*GREETED, OK, TOO_MANY],
        "take mx1 mx2 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | QUIT (refused) | finished",
        {"a@x": "452@mx1", "b@x": "452@mx1"},
        targets=(MX1, MX2),
        recipients=("a@x", "b@x"),
    ),
    Case(
        "421 at RCPT before any answer (RFC 5321 §3.8): QUIT and the next MX",
        [*GREETED, OK, GO_AWAY, NO, BANNER, OK, OK, OK],
        (
            "take mx1 mx2 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | QUIT (refused) | take mx2"
            " | connect mx2 | EHLO | MAIL <> | RCPT <a@x> | park after 1 | finished"
        ),
        {"a@x": "250@mx2"},
        targets=(MX1, MX2),
    ),
    Case(
        "421 at RCPT after answers: the rest get the 421, no failover",
        [*GREETED, OK, OK, GO_AWAY],
        (
            "take mx1 mx2 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | RCPT <b@x>"
            " | QUIT (refused) | finished"
        ),
        {"a@x": "250@mx1", "b@x": "421@mx1"},
        targets=(MX1, MX2),
        recipients=("a@x", "b@x"),
    ),
    Case(
        "a drop after answers: the rest go to a new session with the same host",
        [*GREETED, OK, OK, DROP, *GREETED, OK, OK],
        (
            "take mx1 mx2 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | RCPT <b@x>"
            " | close (broken) | take mx1 mx2 | connect mx1 | EHLO | MAIL <> | RCPT <b@x>"
            " | park after 1 | finished"
        ),
        {"a@x": "250@mx1", "b@x": "250@mx1"},
        targets=(MX1, MX2),
        recipients=("a@x", "b@x"),
    ),
    Case(
        "a drop before any answer: closed, and the next MX",
        [*GREETED, OK, DROP, NO, BANNER, OK, OK, OK],
        (
            "take mx1 mx2 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | close (broken) | take mx2"
            " | connect mx2 | EHLO | MAIL <> | RCPT <a@x> | park after 1 | finished"
        ),
        {"a@x": "250@mx2"},
        targets=(MX1, MX2),
    ),
    Case(
        "a drop before any answer with no other MX: the drop answers all",
        [*GREETED, OK, DROP],
        "take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | close (broken) | finished",
        {"a@x": "disconnected@mx1"},
    ),
    Case(
        "a timeout is closed without QUIT and never resumed",
        [*GREETED, OK, OK, SLOW],
        (
            "take mx1 mx2 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | RCPT <b@x>"
            " | close (broken) | finished"
        ),
        {"a@x": "250@mx1", "b@x": "timeout@mx1"},
        targets=(MX1, MX2),
        recipients=("a@x", "b@x"),
    ),
    Case(
        "a protocol error at MAIL is closed without QUIT",
        [*GREETED, GARBLED],
        "take mx1 | connect mx1 | EHLO | MAIL <> | close (broken) | finished",
        {"a@x": "protocol_error@mx1"},
    ),
    Case(
        "RSET refused between transactions: QUIT, the refusal answers the rest",
        [*GREETED, OK, OK, r(500, "5.5.1 Command unrecognized")],
        ("take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | RSET | QUIT (refused) | finished"),
        {"a@x": "250@mx1", "b@x": "500@mx1"},
        recipients=("a@x", "b@x"),
        options={"rcpt_per_transaction": 1},
    ),
    Case(
        "an address that cannot be encoded: nothing was sent, so QUIT rather than close",
        [*GREETED, OK, UNSENDABLE],
        "take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | QUIT (refused) | finished",
        {"a@x": "protocol_error@mx1", "b@x": "protocol_error@mx1"},
        recipients=("a@x", "b@x"),
    ),
    Case(
        "a host that hangs up after a reply is asked no more; the rest go to a new session",
        [*GREETED, OK, r(250, "2.1.5 Ok", closed=True), *GREETED, OK, OK],
        (
            "take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | QUIT (done) | take mx1"
            " | connect mx1 | EHLO | MAIL <> | RCPT <b@x> | park after 1 | finished"
        ),
        {"a@x": "250@mx1", "b@x": "250@mx1"},
        recipients=("a@x", "b@x"),
    ),
    Case(
        "SMTPUTF8 needed and offered: MAIL and RCPT with SMTPUTF8 (RFC 6531)",
        [NO, BANNER, r(250, ext={"smtputf8"}), OK, OK, OK],
        (
            "take mx1 | connect mx1 | EHLO | MAIL <> SMTPUTF8 | RCPT <ü@x> SMTPUTF8"
            " | RCPT <a@x> SMTPUTF8 | park after 2 | finished"
        ),
        {"ü@x": "250@mx1", "a@x": "250@mx1"},
        recipients=("ü@x", "a@x"),
        options={"smtputf8": True},
    ),
    Case(
        "SMTPUTF8 needed but not offered: those addresses fail unasked, the others are asked",
        [*GREETED, OK, OK],
        "take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | park after 1 | finished",
        {"ü@x": "protocol_error@mx1", "a@x": "250@mx1"},
        recipients=("ü@x", "a@x"),
        options={"smtputf8": True},
    ),
    Case(
        "a recipient given twice is asked once",
        [*GREETED, OK, OK],
        "take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | park after 1 | finished",
        {"a@x": "250@mx1"},
        recipients=("a@x", "a@x"),
    ),
)


@rows(*TRANSACTIONS)
def test_transactions(case: Case) -> None:
    """MAIL, RCPT and RSET, the sender fallback, 452, 421 and failures give the row's commands."""
    commands, outcome = case.run()
    assert " | ".join(commands) == case.commands
    assert summary(outcome) == case.outcomes


# ---------------------------------------------------------------- across sessions

ACROSS = (
    Case(
        "a host that drops every session after one answer gets max_sessions sessions",
        [*GREETED, OK, OK, DROP, *GREETED, OK, OK, DROP, NO],
        (
            "take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <a@x> | RCPT <b@x> | close (broken)"
            " | take mx1 | connect mx1 | EHLO | MAIL <> | RCPT <b@x> | RCPT <c@x>"
            " | close (broken) | take mx1 | finished"
        ),
        {"a@x": "250@mx1", "b@x": "250@mx1", "c@x": "disconnected@-"},
        recipients=("a@x", "b@x", "c@x"),
        options={"max_sessions": 2},
    ),
    Case(
        "a session that answers nobody, with no other target, ends the batch",
        [IdleTaken(MX1, 2), OK],
        "take mx1 | RSET | QUIT (done) | finished",
        {"a@x": "disconnected@mx1"},
        options={"rcpt_per_session": 2},
    ),
    Case(
        "a session that answers nobody, with another target: the next target",
        [IdleTaken(MX1, 2), OK, NO, BANNER, OK, OK, OK],
        (
            "take mx1 mx2 | RSET | QUIT (done) | take mx2 | connect mx2 | EHLO | MAIL <>"
            " | RCPT <a@x> | park after 1 | finished"
        ),
        {"a@x": "250@mx2"},
        targets=(MX1, MX2),
        options={"rcpt_per_session": 2},
    ),
    Case(
        "after a reused session to the second target, new sessions go to that target",
        [IdleTaken(MX2, 0), OK, OK, OK, DROP, NO, BANNER, OK, OK, OK],
        (
            "take mx1 mx2 | RSET | MAIL <> | RCPT <a@x> | RCPT <b@x> | close (broken)"
            " | take mx2 | connect mx2 | EHLO | MAIL <> | RCPT <b@x> | park after 1 | finished"
        ),
        {"a@x": "250@mx2", "b@x": "250@mx2"},
        targets=(MX1, MX2),
        recipients=("a@x", "b@x"),
    ),
    Case(
        "idle sessions do not count against max_sessions",
        [IdleTaken(MX1, 0), OK, OK, OK, DROP, IdleTaken(MX1, 0), OK, OK, OK],
        (
            "take mx1 | RSET | MAIL <> | RCPT <a@x> | RCPT <b@x> | close (broken) | take mx1"
            " | RSET | MAIL <> | RCPT <b@x> | park after 1 | finished"
        ),
        {"a@x": "250@mx1", "b@x": "250@mx1"},
        recipients=("a@x", "b@x"),
        options={"max_sessions": 0},
    ),
)


@rows(*ACROSS)
def test_across_sessions(case: Case) -> None:
    """Resuming, the session budget and stalled sessions give the row's commands."""
    commands, outcome = case.run()
    assert " | ".join(commands) == case.commands
    assert summary(outcome) == case.outcomes


# ---------------------------------------------------------------- what outcomes carry


def test_give_up_says_how_many_sessions_the_host_ended() -> None:
    """The outcome of giving up names the sessions spent and why mxprobe stops."""
    subject = machine(recipients=("a@x", "b@x"), max_sessions=1)
    _, outcome = run(subject, [*GREETED, OK, OK, DROP, NO])
    given_up = outcome.results["b@x"]
    assert given_up.failure is SessionFailure.DISCONNECTED
    assert given_up.detail == (
        "The host ended 1 sessions before answering every recipient; "
        "mxprobe stops there to stay polite."
    )


def test_a_stalled_session_says_so() -> None:
    """A session that answered nobody and leaves nothing to try says the host ended it."""
    _, outcome = run(machine(rcpt_per_session=1), [IdleTaken(MX1, 1), OK])
    assert outcome.results["a@x"].detail == (
        "The host ended the session before answering any recipient."
    )


def test_failures_keep_their_phase_and_sentence() -> None:
    """A failure's outcome has the phase it came at and the adapter's sentence."""
    _, outcome = run(machine(), [*GREETED, OK, SLOW])
    result = outcome.results["a@x"]
    assert (result.phase, result.failure, result.detail) == (
        Phase.RCPT,
        SessionFailure.TIMEOUT,
        SLOW.detail,
    )


@pytest.mark.parametrize(
    ("answers", "phase"),
    [
        ([NO, r(554, "5.7.1 no")], Phase.CONNECT),
        ([NO, BANNER, r(502, "5.5.1 no"), r(502, "5.5.1 no")], Phase.EHLO),
        ([*GREETED, r(451, "4.3.0 Local error in processing")], Phase.MAIL),
        ([*GREETED, OK, OK, r(554, "5.5.1 no")], Phase.RSET),
        ([*GREETED, OK, OK, OK, OK, UNKNOWN], Phase.RCPT),
    ],
)
def test_a_reply_keeps_the_phase_it_answered(answers: list[Event], phase: Phase) -> None:
    """A refusal is recorded with the phase of the command it answered."""
    _, outcome = run(machine(recipients=("a@x", "b@x"), rcpt_per_transaction=1), answers)
    assert outcome.results["b@x"].phase is phase


def test_the_smtputf8_refusal_says_what_is_missing() -> None:
    """An address that needs SMTPUTF8 from a host without it is told why."""
    _, outcome = run(machine(recipients=("ü@x",), smtputf8=True), [*GREETED])
    assert outcome.results["ü@x"].detail == (
        "The host does not support SMTPUTF8 (RFC 6531), which this address needs."
    )


def test_outcomes_carry_the_sessions_used_when_known() -> None:
    """Each outcome counts the connections and reused sessions the batch had used by then."""
    answers: list[Event] = [IdleTaken(MX1, 0), OK, OK, OK, DROP, NO, REFUSED, BANNER, OK, OK, OK]
    _, outcome = run(machine((MX1, MX2), ("a@x", "b@x")), answers)
    assert (outcome.reused, outcome.connections, outcome.sessions) == (1, 2, 1)
    assert {r: o.connections for r, o in outcome.results.items()} == {"a@x": 1, "b@x": 3}


def test_no_recipients_no_commands() -> None:
    """A batch without recipients is finished at once."""
    assert run(machine(recipients=()), []) == (["finished"], ProbeOutcome())


# ---------------------------------------------------------------- using it wrong


def test_finished_is_given_again() -> None:
    """After the end, every call gives the same Finished."""
    subject = machine(recipients=())
    assert subject.next_command() is subject.next_command()


def test_a_command_awaiting_its_answer_blocks_the_next() -> None:
    """Asking for the next command before answering the last one is refused."""
    subject = machine()
    subject.next_command()
    with pytest.raises(RuntimeError, match="awaits the answer"):
        subject.next_command()


def test_an_answer_nobody_asked_for_is_refused() -> None:
    """An event with no command awaiting it is refused."""
    subject = machine()
    subject.next_command()
    subject.receive(NO)
    assert isinstance(subject.next_command(), Connect)
    subject.receive(BANNER)
    with pytest.raises(RuntimeError, match="no command awaits"):
        subject.receive(OK)


@pytest.mark.parametrize(
    ("answers", "wrong"),
    [([], OK), ([NO], NO), ([NO], IdleTaken(MX1, 0)), ([], IdleTaken(MX2, 0))],
    ids=["reply to TakeIdle", "NoIdle to connect", "IdleTaken to connect", "foreign target"],
)
def test_an_event_that_cannot_answer_the_command_is_refused(
    answers: list[Event], wrong: Event
) -> None:
    """A pool event for an SMTP command, a reply for the pool, or a foreign target is refused."""
    subject = machine()
    for answer in answers:
        subject.next_command()
        subject.receive(answer)
    subject.next_command()
    with pytest.raises(RuntimeError):
        subject.receive(wrong)


# ---------------------------------------------------------------- any host at all

_REPLIES = [
    r(250, "2.1.5 Ok"),
    r(250, "2.1.5 Ok", ext={"starttls", "smtputf8"}),
    r(251, "2.1.5 will forward"),
    r(252, "2.5.0 cannot verify"),
    r(220, "2.0.0 Ready"),
    UNKNOWN,
    NULL_REFUSED_AT_MAIL,
    NULL_REFUSED_AT_RCPT,
    TOO_MANY,
    GO_AWAY,
    r(450, "4.7.1 greylisted"),
    r(451, "4.7.0 Please slow down"),
    r(502, "5.5.1 not implemented"),
    r(554, "5.7.1 blocked"),
]
_ANSWERS: st.SearchStrategy[Event] = st.one_of(
    st.sampled_from(_REPLIES).flatmap(
        lambda reply: st.builds(
            Replied, st.just(reply.reply), st.just(reply.extensions), st.booleans()
        )
    ),
    st.sampled_from([DROP, SLOW, GARBLED, REFUSED, UNSENDABLE]),
)
PROBE_COMMANDS = (TakeIdle, Connect, Ehlo, Helo, StartTls, Mail, Rcpt, Rset, Quit, Close, Park)
_RECIPIENTS = st.lists(st.sampled_from(["a@x", "b@x", "c@x", "d@x", "ü@x"]), max_size=6)


@dataclass
class Trace:
    """What a random host saw of the machine."""

    commands: list[Command] = field(default_factory=list)
    answers: list[Event] = field(default_factory=list)
    outcome: ProbeOutcome | None = None


def wander(data: st.DataObject, subject: SessionMachine, *, idle: int) -> Trace:
    """Drive ``subject`` with answers drawn at random (``idle`` sessions in the pool)."""
    trace = Trace()
    for _ in range(10_000):
        command = subject.next_command()
        if isinstance(command, Finished):
            trace.outcome = command.outcome
            return trace
        trace.commands.append(command)
        if isinstance(command, Quit | Close | Park):
            continue
        answer: Event
        if isinstance(command, TakeIdle):
            if idle and command.targets and data.draw(st.booleans()):
                idle -= 1
                target = data.draw(st.sampled_from(command.targets))
                answer = IdleTaken(target, data.draw(st.integers(0, 6)))
            else:
                answer = NO
        else:
            answer = data.draw(_ANSWERS)
        trace.answers.append(answer)
        subject.receive(answer)
    raise AssertionError("the machine did not finish within 10,000 commands")


_OPTIONS = st.fixed_dictionaries(
    {
        "smtputf8": st.booleans(),
        "max_sessions": st.integers(0, 4),
        "rcpt_per_session": st.integers(1, 4),
        "rcpt_per_transaction": st.integers(1, 3),
        "mail_from": st.sampled_from([None, PROBE]),
        "starttls": st.booleans(),
    }
)
_TARGETS = st.lists(st.sampled_from([MX1, MX2, MX3]), max_size=3, unique=True)


@given(st.data(), _TARGETS, _RECIPIENTS, _OPTIONS, st.integers(0, 3))
def test_any_host_gets_an_outcome_for_every_recipient(
    data: st.DataObject,
    targets: list[Target],
    recipients: list[str],
    options: dict[str, Any],
    idle: int,
) -> None:
    """Whatever the host answers, the machine finishes with one outcome per recipient, no DATA."""
    trace = wander(data, machine(targets, recipients, **options), idle=idle)
    assert trace.outcome is not None
    assert all(isinstance(c, PROBE_COMMANDS) for c in trace.commands)  # MAIL, RCPT, never DATA
    assert set(trace.outcome.results) == set(recipients)
    assert all(o.reply is not None or o.failure is not None for o in trace.outcome.results.values())


@given(st.data(), _TARGETS, _RECIPIENTS, _OPTIONS, st.integers(0, 3))
def test_any_host_gets_rcpt_only_in_an_open_transaction_and_within_the_limit(
    data: st.DataObject,
    targets: list[Target],
    recipients: list[str],
    options: dict[str, Any],
    idle: int,
) -> None:
    """RCPT comes only after a 250 to MAIL and before RSET, never past rcpt_per_session."""
    trace = wander(data, machine(targets, recipients, **options), idle=idle)
    answers = iter(trace.answers)
    sent, in_transaction = 0, False
    for command in trace.commands:
        answer = None if isinstance(command, Quit | Close | Park) else next(answers)
        if isinstance(command, Rcpt):
            assert in_transaction and sent < options["rcpt_per_session"]
            sent += 1
        elif isinstance(command, Park):
            assert sent < options["rcpt_per_session"] and sent == command.rcpts
        if isinstance(answer, IdleTaken):
            sent, in_transaction = answer.rcpts, False
        elif isinstance(command, Connect):
            sent, in_transaction = 0, False
        elif isinstance(command, Mail):
            in_transaction = isinstance(answer, Replied) and answer.reply.code == 250
        elif isinstance(command, Rset | Quit | Close | Park):
            in_transaction = False


@given(st.data(), _TARGETS, _RECIPIENTS, _OPTIONS, st.integers(0, 3))
def test_any_host_costs_no_more_than_the_budget(
    data: st.DataObject,
    targets: list[Target],
    recipients: list[str],
    options: dict[str, Any],
    idle: int,
) -> None:
    """New sessions stay within max_sessions; the counts match the commands handed out."""
    trace = wander(data, machine(targets, recipients, **options), idle=idle)
    assert trace.outcome is not None
    connects = [c for c in trace.commands if isinstance(c, Connect)]
    taken = [a for a in trace.answers if isinstance(a, IdleTaken)]
    assert trace.outcome.sessions <= max(options["max_sessions"], 0)
    assert trace.outcome.sessions <= len(connects) == trace.outcome.connections
    assert trace.outcome.reused <= len(taken)
    assert all(o.connections <= trace.outcome.attempts for o in trace.outcome.results.values())
