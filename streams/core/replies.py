"""SMTP replies as values, and their classification by tables.

A reply is classified in three steps, each a table (STYLE rule 1):

1. the reply code class and exact code (RFC 5321 §4.2), given the phase of
   the session the reply answers (``_CODES``);
2. the enhanced status code (RFC 3463), when the server sent one whose class
   digit agrees with the reply code (RFC 3463 §2, RFC 2034 §4);
3. the reply text, as a last refinement where the first two steps leave the
   answer open: no enhanced code, a generic ``x.y.0`` ("other or undefined",
   RFC 3463 §3.1-3.8), ``x.7.x`` (relay denial and blocks share it), and a
   few codes real servers are known to misuse (see the enhanced tables).

Sender refusals count wherever they appear: Postfix reports sender
restrictions at RCPT by default (``smtpd_delay_reject = yes``), so "Sender
address rejected" to RCPT TO is ``NULL_SENDER_REFUSED``, not a verdict on
the recipient.

The rule the tables exist to keep: a real address is never called gone on
weak evidence. A 4xx never classifies as ``MAILBOX_NOT_FOUND`` or
``MAILBOX_DISABLED``; an ``x.7.x`` reply never classifies as
``MAILBOX_NOT_FOUND`` (Yandex answers unknown users with "550 5.7.1 No such
user!" and loses them to ``POLICY_BLOCK``: that is the price of the rule);
policy, relay and sender wording always win over mailbox wording.

Every text pattern has a real sample in ``tests/data/smtp_replies.tsv``; the
tests check that each pattern matches at least one of them.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

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
    NULL_SENDER_REFUSED = "null_sender_refused"  # our MAIL FROM refused (at MAIL, or at RCPT)
    TEMPORARY_FAILURE = "temporary_failure"  # any other 4xx
    PERMANENT_FAILURE = "permanent_failure"  # a 5xx that names neither mailbox nor policy
    PROTOCOL_ERROR = "protocol_error"  # 500-504, codes outside RFC 5321, wrong phase


# RFC 3463 §2: status-code = class "." subject "." detail, 1-3 digits each.
_STATUS = r"[245]\.\d{1,3}\.\d{1,3}"
_STATUS_PARTS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
_LEADING_STATUS = re.compile(rf"({_STATUS})(?:[ \t]+|$)")
# qmail and its patches put the code last: "... (#5.1.1)", "(#5.1.1 - chkuser)".
_TRAILING_QMAIL_STATUS = re.compile(rf"\(#({_STATUS})\b[^()\n]*\)[\s.]*\Z")


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
        on the first line, and repeated on later lines, is split off. It is
        taken only when its class digit equals the reply code's first digit
        (RFC 3463 §2, RFC 2034 §4). Without a leading code, a qmail-style
        trailing ``(#x.y.z)`` is taken instead and the text is left whole.

        Args:
            code: The reply code, as ``aiosmtplib.SMTPResponse.code``. Any
                int is accepted; :func:`classify` judges it.
            message: The text after the code, as
                ``aiosmtplib.SMTPResponse.message``: lines joined by ``"\\n"``.

        Returns:
            The reply; never raises for any ``str``.
        """
        lines = message.strip().split("\n")
        leading = _LEADING_STATUS.match(lines[0])
        if leading is not None and _class_agrees(code, leading.group(1)):
            status = leading.group(1)
            text = "\n".join(_drop_status(line, status) for line in lines)
            return cls(code, text.strip(), status)
        text = message.strip()
        trailing = _TRAILING_QMAIL_STATUS.search(text)
        if trailing is not None and _class_agrees(code, trailing.group(1)):
            return cls(code, text, trailing.group(1))
        return cls(code, text, None)


def _class_agrees(code: int, status: str) -> bool:
    return 100 <= code <= 999 and code // 100 == int(status[0])


def _drop_status(line: str, status: str) -> str:
    """Strip ``status`` and the blanks after it from the start of ``line``."""
    rest = line[len(status) :]
    if not line.startswith(status) or rest[:1] not in ("", " ", "\t"):
        return line
    return rest.lstrip(" \t")


# --- Step 3 vocabulary: text patterns, one wording family each -------------

_TextRules = tuple[tuple[re.Pattern[str], ReplyClass], ...]


def _words(*patterns: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(pattern, re.IGNORECASE) for pattern in patterns)


def _rules(words: tuple[re.Pattern[str], ...], result: ReplyClass) -> _TextRules:
    return tuple((word, result) for word in words)


_RELAY = _words(
    r"\brelay(?:ing)?\b(?!=)",  # "relay=[...]" is Sendmail's log of the peer, not a refusal
    r"\brcpthosts\b",  # qmail: "isn't in my list of allowed rcpthosts"
    r"\bdelivery is not allowed to this address\b",  # hMailServer
)
_SENDER = _words(
    r"\b(?:envelope )?sender(?:'s)? (?:address|domain)\b",
    r"\bsender verify failed\b",
    r"\bbadmailfrom\b",
    r"\bbackscatter\b",  # MDaemon refuses <> to addresses without its BATV tag
    r"\bnull sender\b",
    r"\bbogus mail from\b",
    r"\binvalid sender\b",
)
_RATE = _words(
    r"\brate(?:[ -]?limit\w*)?\b",
    r"\btoo many (?:connections|messages)\b|\btoo many (?:\w+ ){1,2}from\b",
    r"\bthrottl",
    r"\btoo quickly\b|\btoo much e?mail\b",
    r"\b(?:unexpected|excessive) volume\b",
    r"\bslow down\b",
    r"\bbusy\b",
    r"\bthis hour\b",
    r"\blimit exceeded\b",
)
_CLIENT = _words(  # the connecting host, not the mailbox, is judged
    r"\b(?:spamhaus|dnsbl|rbl|barracuda reputation|cloudmark)\b",
    r"\bblock(?:ed|[ -]?list(?:ed)?)?\b|\bblack[ -]?list(?:ed)?\b",
    r"\bbanned\b",
    r"\breputation\b",
    r"\bclient host\b",
    r"\bhelo\b",
    r"\b(?:ptr|reverse dns)\b",
    r"\b(?:starttls|tls|encryption)\b",
    r"\bauthenticat",
    r"\bip\b",
)
_GENERAL_POLICY = _words(
    r"\bspam",
    r"\bpolicy\b",
    r"\baccess denied\b",
    r"\bnot authori[sz]ed\b",
    r"\badministrative prohibition\b",
    r"\brefused\b",
    r"\bspf\b",
)
_POLICY = _CLIENT + _GENERAL_POLICY
_FULL = _words(
    r"\bover ?quota\b",
    r"\bquota exceeded\b",
    r"\b(?:mailbox|inbox|account)\b[^.\n]{0,20}?\bfull\b",
    r"\bout of storage\b|\bstorage (?:space|allocation)\b",
)
_TOO_MANY_RECIPIENTS = _words(r"\btoo many recipients\b")
_DISABLED = _words(
    r"\b(?:account|mailbox|user)\b[^.\n]{0,30}?\b(?:disabled|inactive|closed|locked)\b",
    r"\bno longer valid\b",
)
_SERVICE_REFUSED = _words(r"\bservice (?:is |currently )?(?:unavailable|not available)\b")
_MAILBOX = _words(
    r"\buser (?:is )?unknown\b|\bunknown (?:user|local part)\b",
    r"\bno such (?:user|mailbox)\b",
    r"(?:\bnot|n't|\bno) exists?\b",
    r"\b(?:user|mailbox|recipient)\b[^.\n]{0,40}?\bnot found\b",
    r"\bmailbox unavailable\b",
    r"\binvalid (?:recipient|mailbox|address)\b|\baddress invalid\b",
    r"\bunrouteable address\b",
    r"\bno mailbox here\b",
    r"\bmailbox name not allowed\b",
    r"\bdoesn't have an? (?:[\w.-]+ )?account\b",
)
# Microsoft 365 Directory-Based Edge Blocking: the recipient is not in the tenant directory.
_DIRECTORY = _words(r"\brecipient address rejected: access denied\b")
_GREYLIST = _words(
    r"\bgr[ae]y-?list",
    r"\btemporarily deferred\b",
    r"\binternal resources? (?:are |is )?temporarily unavailable\b",  # Mimecast
)
_TRY_LATER = _words(r"\btry(?: again)? later\b")
_LOCAL_TROUBLE = _words(
    r"\b(?:server|system) (?:error|problem)\b|\blocal problem\b",
    r"\binsufficient (?:system |disk )?(?:storage|resources|space)\b",
)

# 4xx: the text only picks which kind of "retry later" this is.
_TRANSIENT_TEXT: _TextRules = (
    *_rules(_FULL, ReplyClass.MAILBOX_FULL),
    *_rules(_RATE, ReplyClass.RATE_LIMITED),
    *_rules(_TOO_MANY_RECIPIENTS, ReplyClass.TOO_MANY_RECIPIENTS),
    *_rules(_GREYLIST, ReplyClass.GREYLISTED),
)
_STORAGE_TEXT: _TextRules = (  # 452 is storage or too many recipients (RFC 5321 §4.5.3.1.10)
    *_rules(_LOCAL_TROUBLE, ReplyClass.TEMPORARY_FAILURE),
    *_TRANSIENT_TEXT,
)
_TRANSIENT_POLICY_TEXT: _TextRules = (  # 4.7.x: a temporary security/policy status
    *_rules(_RATE, ReplyClass.RATE_LIMITED),
    *_rules(_GREYLIST, ReplyClass.GREYLISTED),
    *_rules(_LOCAL_TROUBLE, ReplyClass.TEMPORARY_FAILURE),
    *_rules(_POLICY, ReplyClass.TEMPORARY_FAILURE),
    *_rules(_MAILBOX, ReplyClass.TEMPORARY_FAILURE),
    *_rules(_TRY_LATER, ReplyClass.GREYLISTED),
)
# 5xx: relay, sender and policy wording outrank any mailbox wording.
_PERMANENT_TEXT: _TextRules = (
    *_rules(_RELAY, ReplyClass.RELAY_DENIED),
    *_rules(_CLIENT, ReplyClass.POLICY_BLOCK),
    *_rules(_SENDER, ReplyClass.NULL_SENDER_REFUSED),
    *_rules(_GENERAL_POLICY + _RATE, ReplyClass.POLICY_BLOCK),
    *_rules(_FULL, ReplyClass.MAILBOX_FULL),
    *_rules(_TOO_MANY_RECIPIENTS, ReplyClass.TOO_MANY_RECIPIENTS),
    *_rules(_DISABLED, ReplyClass.MAILBOX_DISABLED),
    *_rules(_SERVICE_REFUSED, ReplyClass.PERMANENT_FAILURE),
    *_rules(_MAILBOX, ReplyClass.MAILBOX_NOT_FOUND),
)
_SECURITY_TEXT: _TextRules = (  # x.7.x: which kind of refusal, never "mailbox gone"
    *_rules(_RELAY, ReplyClass.RELAY_DENIED),
    *_rules(_CLIENT, ReplyClass.POLICY_BLOCK),
    *_rules(_SENDER, ReplyClass.NULL_SENDER_REFUSED),
)
_SENDER_TEXT = _rules(_SENDER, ReplyClass.NULL_SENDER_REFUSED)
_RELAY_TEXT = _rules(_RELAY, ReplyClass.RELAY_DENIED)
_MAIL_FROM_TEXT: _TextRules = (  # MAIL 5xx: our sender, unless the client is judged
    *_rules(_CLIENT + _RATE, ReplyClass.POLICY_BLOCK),
    *_SENDER_TEXT,
)
_BANNER_TEXT = _rules(_POLICY, ReplyClass.POLICY_BLOCK)


# --- Steps 1 and 2: code and enhanced status tables -------------------------


@dataclass(frozen=True, slots=True)
class _Outcome:
    """A class, and text rules that may refine it (step 3)."""

    default: ReplyClass
    refine: _TextRules = ()


# (subject, detail) or (subject, None) for the whole subject. ``None`` as a
# value leaves the reading's default outcome in force (RFC 3463: x.y.0 is
# "other or undefined", so only the code and the text can tell more).
_EnhancedTable = Mapping[tuple[int, int | None], _Outcome | None]


@dataclass(frozen=True, slots=True)
class _Reading:
    """How to read a reply whose code alone does not decide (steps 2 and 3)."""

    enhanced: _EnhancedTable
    default: _Outcome


def _table(entries: dict[tuple[int, int | None], _Outcome | None]) -> _EnhancedTable:
    return MappingProxyType(entries)


_OPEN_DETAILS: dict[tuple[int, int | None], _Outcome | None] = {
    (subject, 0): None for subject in range(7)
}

_RCPT_TRANSIENT = _Outcome(ReplyClass.TEMPORARY_FAILURE, _TRANSIENT_TEXT)
_RCPT_TRANSIENT_ENHANCED = _table(
    {
        **_OPEN_DETAILS,
        **{(subject, None): _RCPT_TRANSIENT for subject in range(1, 7)},
        (2, 1): _Outcome(ReplyClass.TEMPORARY_FAILURE, _rules(_RATE, ReplyClass.RATE_LIMITED)),
        (2, 2): _Outcome(ReplyClass.MAILBOX_FULL),
        (3, 1): _Outcome(ReplyClass.TEMPORARY_FAILURE),  # insufficient system storage
        (5, 3): _Outcome(ReplyClass.TOO_MANY_RECIPIENTS),
        (7, 1): _Outcome(ReplyClass.GREYLISTED, _TRANSIENT_POLICY_TEXT),
        (7, None): _Outcome(ReplyClass.TEMPORARY_FAILURE, _TRANSIENT_POLICY_TEXT),
    }
)
_SECURITY = _Outcome(ReplyClass.POLICY_BLOCK, _SECURITY_TEXT)
_FAILED = _Outcome(ReplyClass.PERMANENT_FAILURE)
_RCPT_PERMANENT_ENHANCED = _table(
    {
        **_OPEN_DETAILS,
        (1, 7): _Outcome(ReplyClass.NULL_SENDER_REFUSED),  # bad sender's mailbox
        (1, 8): _Outcome(ReplyClass.NULL_SENDER_REFUSED),  # bad sender's system
        # chkuser answers a sender domain without MX with 5.1.1: sender wording wins.
        (1, None): _Outcome(ReplyClass.MAILBOX_NOT_FOUND, _SENDER_TEXT),
        (2, 1): _Outcome(ReplyClass.MAILBOX_DISABLED),
        (2, 2): _Outcome(ReplyClass.MAILBOX_FULL),
        (2, None): _FAILED,
        (3, None): _FAILED,
        # Microsoft 365 Directory-Based Edge Blocking answers a recipient that
        # is not in the tenant directory with "550 5.4.1 Recipient address
        # rejected: Access denied. AS(201806281)" (Microsoft support: "NDR error
        # 550 5.4.1 ... the recipient's email address is not valid").
        # Any other 5.4.1 is a routing status ("no answer from host", RFC 3463).
        (4, 1): _Outcome(
            ReplyClass.PERMANENT_FAILURE,
            (*_RELAY_TEXT, *_rules(_DIRECTORY, ReplyClass.MAILBOX_NOT_FOUND)),
        ),
        (4, None): _FAILED,
        # chkuser sends its relay refusal as 553 5.5.3.
        (5, 3): _Outcome(ReplyClass.TOO_MANY_RECIPIENTS, _RELAY_TEXT),
        (5, None): _Outcome(ReplyClass.PROTOCOL_ERROR),
        (6, None): _FAILED,
        (7, None): _SECURITY,
    }
)
_RCPT_STORAGE_ENHANCED = _table(  # 552: the code says "storage", whatever x.1.x claims
    {
        (2, 3): _FAILED,  # message length exceeds administrative limit
        (3, 4): _FAILED,  # message too big for system
        (5, 3): _Outcome(ReplyClass.TOO_MANY_RECIPIENTS),
        (7, None): _SECURITY,
    }
)
_MAIL_TRANSIENT_ENHANCED = _table(
    {
        (7, 1): _Outcome(ReplyClass.GREYLISTED, _TRANSIENT_POLICY_TEXT),
        (7, None): _Outcome(ReplyClass.TEMPORARY_FAILURE, _TRANSIENT_POLICY_TEXT),
    }
)
_MAIL_REFUSED_ENHANCED = _table({(5, 0): None, (5, None): _Outcome(ReplyClass.PROTOCOL_ERROR)})
_MAIL_SYNTAX_ENHANCED = _table(
    {
        (1, 7): _Outcome(ReplyClass.NULL_SENDER_REFUSED),
        (1, 8): _Outcome(ReplyClass.NULL_SENDER_REFUSED),
    }
)
_BANNER_ENHANCED = _table({(7, None): _Outcome(ReplyClass.POLICY_BLOCK)})

_RCPT_TEMPORARY = _Reading(_RCPT_TRANSIENT_ENHANCED, _RCPT_TRANSIENT)
_RCPT_STORAGE = _Reading(_RCPT_TRANSIENT_ENHANCED, _Outcome(ReplyClass.MAILBOX_FULL, _STORAGE_TEXT))
_RCPT_MAILBOX = _Reading(
    _RCPT_PERMANENT_ENHANCED, _Outcome(ReplyClass.MAILBOX_NOT_FOUND, _PERMANENT_TEXT)
)
_RCPT_FAILED = _Reading(
    _RCPT_PERMANENT_ENHANCED, _Outcome(ReplyClass.PERMANENT_FAILURE, _PERMANENT_TEXT)
)
_RCPT_FULL = _Reading(_RCPT_STORAGE_ENHANCED, _Outcome(ReplyClass.MAILBOX_FULL, _PERMANENT_TEXT))
_MAIL_TEMPORARY = _Reading(
    _MAIL_TRANSIENT_ENHANCED,
    _Outcome(
        ReplyClass.TEMPORARY_FAILURE,
        (*_rules(_RATE, ReplyClass.RATE_LIMITED), *_rules(_GREYLIST, ReplyClass.GREYLISTED)),
    ),
)
_MAIL_REFUSED = _Reading(
    _MAIL_REFUSED_ENHANCED, _Outcome(ReplyClass.NULL_SENDER_REFUSED, _MAIL_FROM_TEXT)
)
# Our MAIL FROM is well formed, so a 501 to it is a refusal when it says so
# (IMail "501 bogus mail from", Orange "501 5.1.0 ... Invalid Sender").
_MAIL_SYNTAX = _Reading(_MAIL_SYNTAX_ENHANCED, _Outcome(ReplyClass.PROTOCOL_ERROR, _SENDER_TEXT))
_BANNER_REFUSED = _Reading(_BANNER_ENHANCED, _Outcome(ReplyClass.PERMANENT_FAILURE, _BANNER_TEXT))

_Step = ReplyClass | _Reading


@dataclass(frozen=True, slots=True)
class _CodeTable:
    """Step 1 for one phase: exact codes first, then the first digit."""

    exact: Mapping[int, _Step]
    by_class: Mapping[int, _Step]  # a first digit not listed: protocol error


def _codes(exact: dict[int, _Step], by_class: dict[int, _Step]) -> _CodeTable:
    return _CodeTable(MappingProxyType(dict(exact)), MappingProxyType(dict(by_class)))


# RFC 5321 §3.8: 421 closes the channel; come back later, and more slowly.
_CLOSING: dict[int, _Step] = {421: ReplyClass.RATE_LIMITED}
# RFC 5321 §4.2.2-4.2.3: 500-504 and 555 blame our command; 530 is RFC 3207 /
# RFC 4954 "TLS / authentication required", a policy of the server.
_COMMAND_CODES: dict[int, _Step] = {
    **_CLOSING,
    **{code: ReplyClass.PROTOCOL_ERROR for code in (500, 501, 502, 503, 504, 555)},
    530: ReplyClass.POLICY_BLOCK,
}
_CODES: Mapping[Phase, _CodeTable] = MappingProxyType(
    {
        Phase.CONNECT: _codes(
            {**_CLOSING, 220: ReplyClass.ACCEPTED, 554: ReplyClass.POLICY_BLOCK},
            {4: ReplyClass.TEMPORARY_FAILURE, 5: _BANNER_REFUSED},
        ),
        # A 5xx to EHLO is a protocol error: the caller falls back to HELO.
        Phase.EHLO: _codes(_CLOSING, {2: ReplyClass.ACCEPTED, 4: ReplyClass.TEMPORARY_FAILURE}),
        Phase.MAIL: _codes(
            {**_COMMAND_CODES, 501: _MAIL_SYNTAX},
            {2: ReplyClass.ACCEPTED, 4: _MAIL_TEMPORARY, 5: _MAIL_REFUSED},
        ),
        Phase.RCPT: _codes(
            {
                **_COMMAND_CODES,
                250: ReplyClass.ACCEPTED,
                251: ReplyClass.ACCEPTED,
                252: ReplyClass.CANNOT_VERIFY,  # RFC 5321 §3.5.3
                452: _RCPT_STORAGE,
                # A bare 550 names the mailbox (the usual reply to an unknown
                # user). 551 ("user not local", RFC 5321 §3.4: the user exists
                # elsewhere) and 553 need 5.1.x or mailbox wording to count as
                # "not found".
                550: _RCPT_MAILBOX,
                551: _RCPT_FAILED,
                552: _RCPT_FULL,
                553: _RCPT_FAILED,
            },
            {4: _RCPT_TEMPORARY, 5: _RCPT_FAILED},
        ),
        Phase.RSET: _codes(_CLOSING, {2: ReplyClass.ACCEPTED}),
        Phase.QUIT: _codes(_CLOSING, {2: ReplyClass.ACCEPTED}),
    }
)


def classify(reply: SmtpReply, phase: Phase = Phase.RCPT) -> ReplyClass:
    """Classify ``reply`` given the session ``phase`` it answers.

    Codes outside RFC 5321 §4.2 (first digit 2-5, second digit 0-5) are
    protocol errors. An enhanced code whose class digit disagrees with the
    reply code is ignored (RFC 3463 §2).

    Args:
        reply: The reply to classify.
        phase: The command (or the connection greeting) the reply answers.

    Returns:
        The class; never raises.
    """
    code = reply.code
    if not (200 <= code <= 599 and code // 10 % 10 <= 5):
        return ReplyClass.PROTOCOL_ERROR
    table = _CODES[phase]
    step = table.exact.get(code)
    if step is None:
        step = table.by_class.get(code // 100, ReplyClass.PROTOCOL_ERROR)
    if isinstance(step, ReplyClass):
        return step
    outcome = _enhanced_outcome(step, reply)
    for pattern, result in outcome.refine:
        if pattern.search(reply.text):
            return result
    return outcome.default


def _enhanced_outcome(reading: _Reading, reply: SmtpReply) -> _Outcome:
    parts = _STATUS_PARTS.fullmatch(reply.enhanced or "")
    if parts is None or int(parts.group(1)) != reply.code // 100:
        return reading.default
    subject, detail = int(parts.group(2)), int(parts.group(3))
    for key in ((subject, detail), (subject, None)):
        if key in reading.enhanced:
            return reading.enhanced[key] or reading.default
    return reading.default
