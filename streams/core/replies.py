"""SMTP replies as values, and their classification by tables.

A reply is classified in three steps, each a table (STYLE rule 1):

1. the reply code class and exact code (RFC 5321 §4.2), given the phase of
   the session the reply answers;
2. the enhanced status code (RFC 3463), when the server sent one;
3. the reply text, as a last refinement for servers that send no enhanced
   code or a generic one (``x.0.0``).

Every text pattern has a real sample in ``tests/data/smtp_replies.tsv``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Phase", "ReplyClass", "SmtpReply", "classify"]


class Phase(enum.StrEnum):
    """The step of an SMTP session a reply answers."""

    CONNECT = "connect"  # the 220 banner
    EHLO = "ehlo"
    MAIL = "mail"
    RCPT = "rcpt"
    RSET = "rset"
    QUIT = "quit"


class ReplyClass(enum.StrEnum):
    """What a reply tells us, independent of which server dialect said it."""

    ACCEPTED = "accepted"  # 250 / 251 (and 2xx to non-RCPT phases)
    CANNOT_VERIFY = "cannot_verify"  # 252: will accept, cannot verify the user
    MAILBOX_NOT_FOUND = "mailbox_not_found"  # 550/551/553 + 5.1.x or mailbox wording
    MAILBOX_FULL = "mailbox_full"  # 452 / 552 / x.2.2
    MAILBOX_DISABLED = "mailbox_disabled"  # 5.2.1
    GREYLISTED = "greylisted"  # 450/451 + 4.7.1 or greylist wording
    RATE_LIMITED = "rate_limited"  # 421; 450/451 4.7.x + rate wording
    TOO_MANY_RECIPIENTS = "too_many_recipients"  # 452 4.5.3: start a new transaction
    POLICY_BLOCK = "policy_block"  # 5.7.x, blocklists: never "mailbox not found"
    RELAY_DENIED = "relay_denied"  # 5.7.1 + relay wording: host does not serve the domain
    NULL_SENDER_REFUSED = "null_sender_refused"  # MAIL FROM:<> refused
    TEMPORARY_FAILURE = "temporary_failure"  # any other 4xx
    PERMANENT_FAILURE = "permanent_failure"  # a 5xx that names neither mailbox nor policy
    PROTOCOL_ERROR = "protocol_error"  # 500-504, codes outside RFC 5321, wrong phase


@dataclass(frozen=True, slots=True)
class SmtpReply:
    """One SMTP reply: its code, enhanced status code (if any) and text.

    ``text`` holds the lines of a multi-line reply joined by ``"\\n"``, with
    the reply codes and the leading enhanced status code removed.
    """

    code: int
    text: str = ""
    enhanced: str | None = None

    @classmethod
    def from_message(cls, code: int, message: str) -> SmtpReply:
        """Build a reply from a code and the text after it.

        A leading RFC 3463 enhanced status code (``class.subject.detail``)
        on the first line, and repeated on later lines, is split off.
        """
        raise NotImplementedError


def classify(reply: SmtpReply, phase: Phase = Phase.RCPT) -> ReplyClass:
    """Classify ``reply`` given the session ``phase`` it answers."""
    raise NotImplementedError
