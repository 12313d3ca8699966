"""Facts → verdict: the one place where the rules combine.

The verifier gathers :class:`Facts` about one address (syntax, static
signals, what DNS said, what the mail host replied to RCPT and to a random
recipient); :func:`decide` turns them into a :class:`Verdict` by tables.

The rule the tables keep: a real address must never be
called undeliverable on weak evidence. Only a syntax error, a DNS fact
(NXDOMAIN, null MX, no mail server) or a 5xx that names the mailbox makes an
address undeliverable; a 4xx, a timeout, SERVFAIL, a connection failure or a
policy block is ``unknown``.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any

from streams.core.address import Address, SyntaxProblem
from streams.core.catchall import CatchAll
from streams.core.lists import Signals
from streams.core.mx import DnsProblem
from streams.core.probe import SessionFailure
from streams.core.replies import Phase, ReplyClass, SmtpReply, classify

__all__ = [
    "REPLY_TEXT_LIMIT",
    "Evidence",
    "Facts",
    "Flags",
    "Reason",
    "Status",
    "Verdict",
    "decide",
]

#: Reply text kept as evidence is cut to this many characters.
REPLY_TEXT_LIMIT = 300


class Status(enum.StrEnum):
    """The verdict's answer to "will mail to this address be delivered?"."""

    DELIVERABLE = "deliverable"
    UNDELIVERABLE = "undeliverable"
    RISKY = "risky"  # accepted for now, but it may bounce or not reach a person
    UNKNOWN = "unknown"  # we could not find out; says nothing against the address


class Reason(enum.StrEnum):
    """Stable identifier of why a verdict has its status (safe to store and group by)."""

    ACCEPTED = "accepted"
    MAILBOX_NOT_FOUND = "mailbox_not_found"
    MAILBOX_DISABLED = "mailbox_disabled"
    MAILBOX_FULL = "mailbox_full"
    INVALID_SYNTAX = "invalid_syntax"
    NO_SUCH_DOMAIN = "no_such_domain"
    NO_MAIL_SERVER = "no_mail_server"
    NULL_MX = "null_mx"
    ACCEPT_ALL = "accept_all"
    CANNOT_VERIFY = "cannot_verify"
    DISPOSABLE = "disposable"
    GREYLISTED = "greylisted"
    THROTTLED = "throttled"
    TIMEOUT = "timeout"
    CONNECTION_FAILED = "connection_failed"
    DISCONNECTED = "disconnected"
    BLOCKED = "blocked"
    RELAY_DENIED = "relay_denied"
    NULL_SENDER_REFUSED = "null_sender_refused"
    TEMPORARY_FAILURE = "temporary_failure"
    REJECTED = "rejected"  # a 5xx naming neither the mailbox nor a policy
    PROTOCOL_ERROR = "protocol_error"
    DNS_ERROR = "dns_error"
    PRIVATE_MX = "private_mx"


@dataclass(frozen=True, slots=True)
class Flags:
    """Boolean facts a consumer may filter on, whatever the status."""

    disposable: bool = False
    role: bool = False
    free_provider: bool = False
    accept_all: bool = False


@dataclass(frozen=True, slots=True)
class Evidence:
    """What was observed, so a verdict can be checked and argued with."""

    mail_host: str | None = None
    mail_host_address: str | None = None
    phase: str | None = None  # the session step that gave the deciding reply
    reply_code: int | None = None
    enhanced_status: str | None = None
    reply_text: str | None = None  # cut to REPLY_TEXT_LIMIT characters
    catch_all: str = CatchAll.UNKNOWN.value
    dns: str | None = None  # the DnsProblem, when DNS decided
    attempts: int = 0  # SMTP sessions opened for this address
    syntax: str | None = None  # the SyntaxProblem code, when syntax decided


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer for one address; ``to_dict`` is its JSON form."""

    email: str  # exactly as submitted
    normalized: str | None
    ascii_email: str | None
    status: Status
    reason: Reason
    flags: Flags
    confidence: float
    evidence: Evidence
    did_you_mean: str | None = None
    detail: str = ""  # one sentence for people; `reason` is for programs

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (enums as their string values)."""
        data = asdict(self)
        data["status"] = self.status.value
        data["reason"] = self.reason.value
        return data


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the verifier learned about one address."""

    email: str
    address: Address | None = None
    syntax: SyntaxProblem | None = None
    signals: Signals | None = None
    dns: DnsProblem | None = None
    mail_host: str | None = None
    mail_host_address: str | None = None
    reply: SmtpReply | None = None  # the deciding reply (RCPT, or the step that failed)
    phase: Phase | None = None
    failure: SessionFailure | None = None  # when the session gave no reply
    catch_all: CatchAll = CatchAll.UNKNOWN
    attempts: int = 0
    detail: str = ""  # extra words from the adapter (e.g. what timed out)


@dataclass(frozen=True, slots=True)
class _Rule:
    status: Status
    reason: Reason
    confidence: float
    sentence: str


_U, _R, _D, _X = Status.UNDELIVERABLE, Status.RISKY, Status.DELIVERABLE, Status.UNKNOWN

_DNS_RULES: dict[DnsProblem, _Rule] = {
    DnsProblem.NXDOMAIN: _Rule(_U, Reason.NO_SUCH_DOMAIN, 0.95, "The domain does not exist."),
    DnsProblem.NULL_MX: _Rule(
        _U, Reason.NULL_MX, 0.99, "The domain publishes a null MX: it accepts no mail."
    ),
    DnsProblem.NO_MAIL_SERVER: _Rule(
        _U, Reason.NO_MAIL_SERVER, 0.9, "The domain has no mail server that resolves."
    ),
    DnsProblem.SERVFAIL: _Rule(
        _X, Reason.DNS_ERROR, 0.0, "The domain's name servers failed to answer."
    ),
    DnsProblem.TIMEOUT: _Rule(_X, Reason.TIMEOUT, 0.0, "DNS gave no answer in time."),
    DnsProblem.PRIVATE_MX: _Rule(
        _X,
        Reason.PRIVATE_MX,
        0.0,
        "Every mail host is on a private or loopback address; "
        "probing those needs --allow-private-mx.",
    ),
}

_FAILURE_RULES: dict[SessionFailure, _Rule] = {
    SessionFailure.TIMEOUT: _Rule(_X, Reason.TIMEOUT, 0.0, "The mail host did not answer in time."),
    SessionFailure.CONNECTION_FAILED: _Rule(
        _X, Reason.CONNECTION_FAILED, 0.0, "No mail host accepted a connection."
    ),
    SessionFailure.DISCONNECTED: _Rule(
        _X, Reason.DISCONNECTED, 0.0, "The mail host closed the connection before answering."
    ),
    SessionFailure.PROTOCOL_ERROR: _Rule(
        _X, Reason.PROTOCOL_ERROR, 0.0, "The mail host's replies broke the SMTP protocol."
    ),
    SessionFailure.DEFERRED: _Rule(
        _X,
        Reason.THROTTLED,
        0.0,
        "mxprobe held the probe back to stay within its rate budget for this mail host.",
    ),
}

# Replies that end a session before RCPT, or answer RCPT without a mailbox verdict.
_REPLY_RULES: dict[ReplyClass, _Rule] = {
    ReplyClass.CANNOT_VERIFY: _Rule(
        _R,
        Reason.CANNOT_VERIFY,
        0.5,
        "The mail host will accept the message but cannot verify the user.",
    ),
    ReplyClass.MAILBOX_DISABLED: _Rule(
        _U, Reason.MAILBOX_DISABLED, 0.9, "The mailbox exists but is disabled."
    ),
    ReplyClass.MAILBOX_FULL: _Rule(_R, Reason.MAILBOX_FULL, 0.7, "The mailbox exists but is full."),
    ReplyClass.GREYLISTED: _Rule(
        _X, Reason.GREYLISTED, 0.0, "The mail host greylisted the probe; a later retry may pass."
    ),
    ReplyClass.RATE_LIMITED: _Rule(
        _X, Reason.THROTTLED, 0.0, "The mail host is rate-limiting the probe."
    ),
    ReplyClass.TOO_MANY_RECIPIENTS: _Rule(
        _X, Reason.THROTTLED, 0.0, "The mail host refused more recipients in this session."
    ),
    ReplyClass.POLICY_BLOCK: _Rule(
        _X,
        Reason.BLOCKED,
        0.0,
        "The mail host blocked the probe by policy (says nothing of the mailbox).",
    ),
    ReplyClass.RELAY_DENIED: _Rule(
        _X, Reason.RELAY_DENIED, 0.0, "The mail host does not accept mail for this domain."
    ),
    ReplyClass.NULL_SENDER_REFUSED: _Rule(
        _X,
        Reason.NULL_SENDER_REFUSED,
        0.0,
        "The mail host refused the probe's sender; set --mail-from to a probe address.",
    ),
    ReplyClass.TEMPORARY_FAILURE: _Rule(
        _X, Reason.TEMPORARY_FAILURE, 0.0, "The mail host reported a temporary failure."
    ),
    ReplyClass.PERMANENT_FAILURE: _Rule(
        _X, Reason.REJECTED, 0.0, "The mail host refused without saying the mailbox is missing."
    ),
    ReplyClass.PROTOCOL_ERROR: _Rule(
        _X, Reason.PROTOCOL_ERROR, 0.0, "The mail host answered outside the SMTP protocol."
    ),
}

# Confidence of "mailbox not found" by the strength of the evidence.
_NOT_FOUND_CONFIDENCE_ENHANCED = 0.95  # 5.1.x enhanced status code
_NOT_FOUND_CONFIDENCE_PLAIN = 0.8  # mailbox wording or a bare 550/551/553

# Confidence of "accepted" by what the catch-all probe learned.
_ACCEPTED_CONFIDENCE = {
    CatchAll.REJECTS_UNKNOWN: 0.95,  # the host says no to strangers, so its yes means yes
    CatchAll.UNKNOWN: 0.75,
}


def decide(facts: Facts) -> Verdict:
    """Turn what was learned about an address into its verdict.

    Precedence: syntax, then DNS, then the session failure, then the reply.
    """
    rule = _rule_for(facts)
    signals = facts.signals
    flags = Flags(
        disposable=bool(signals and signals.disposable),
        role=bool(signals and signals.role),
        free_provider=bool(signals and signals.free_provider),
        accept_all=facts.catch_all is CatchAll.ACCEPTS_ALL,
    )
    reply = facts.reply
    evidence = Evidence(
        mail_host=facts.mail_host,
        mail_host_address=facts.mail_host_address,
        phase=facts.phase.value if facts.phase is not None and reply is not None else None,
        reply_code=reply.code if reply is not None else None,
        enhanced_status=reply.enhanced if reply is not None else None,
        reply_text=_bounded(reply.text) if reply is not None else None,
        catch_all=facts.catch_all.value,
        dns=facts.dns.value if facts.dns is not None else None,
        attempts=facts.attempts,
        syntax=facts.syntax.code if facts.syntax is not None else None,
    )
    address = facts.address
    detail = rule.sentence if not facts.detail else f"{rule.sentence} {facts.detail}"
    return Verdict(
        email=facts.email,
        normalized=address.normalized if address is not None else None,
        ascii_email=address.ascii_email if address is not None else None,
        status=rule.status,
        reason=rule.reason,
        flags=flags,
        confidence=rule.confidence,
        evidence=evidence,
        did_you_mean=signals.did_you_mean if signals is not None else None,
        detail=detail,
    )


def _rule_for(facts: Facts) -> _Rule:
    if facts.syntax is not None or facts.address is None:
        message = facts.syntax.message if facts.syntax is not None else "The address is invalid."
        return _Rule(_U, Reason.INVALID_SYNTAX, 0.99, message)
    if facts.dns is not None:
        return _DNS_RULES[facts.dns]
    if facts.reply is None:
        failure = facts.failure or SessionFailure.CONNECTION_FAILED
        return _FAILURE_RULES[failure]
    reply_class = _reply_class(facts)
    if reply_class is ReplyClass.ACCEPTED:
        return _accepted_rule(facts)
    if reply_class is ReplyClass.MAILBOX_NOT_FOUND:
        strong = facts.reply.enhanced is not None and facts.reply.enhanced.startswith("5.1.")
        confidence = _NOT_FOUND_CONFIDENCE_ENHANCED if strong else _NOT_FOUND_CONFIDENCE_PLAIN
        return _Rule(
            _U,
            Reason.MAILBOX_NOT_FOUND,
            confidence,
            "The mail host says the mailbox does not exist.",
        )
    return _REPLY_RULES[reply_class]


def _reply_class(facts: Facts) -> ReplyClass:
    assert facts.reply is not None
    reply_class = classify(facts.reply, facts.phase or Phase.RCPT)
    if facts.phase not in (None, Phase.RCPT) and reply_class is ReplyClass.ACCEPTED:
        # A session that stopped on a 2xx before RCPT is our machinery's fault,
        # not the host's: treat it as a protocol error rather than a "yes".
        return ReplyClass.PROTOCOL_ERROR
    return reply_class


def _accepted_rule(facts: Facts) -> _Rule:
    if facts.signals is not None and facts.signals.disposable:
        return _Rule(
            _R, Reason.DISPOSABLE, 0.9, "The mailbox accepts mail, but the domain is disposable."
        )
    if facts.catch_all is CatchAll.ACCEPTS_ALL:
        return _Rule(
            _R,
            Reason.ACCEPT_ALL,
            0.5,
            "The mail host accepts every recipient of this domain, so its yes proves nothing.",
        )
    return _Rule(
        _D,
        Reason.ACCEPTED,
        _ACCEPTED_CONFIDENCE[facts.catch_all],
        "The mail host accepted the recipient.",
    )


def _bounded(text: str) -> str:
    return text if len(text) <= REPLY_TEXT_LIMIT else text[: REPLY_TEXT_LIMIT - 1] + "…"
