"""What a failed SMTP step means, in words: the failure and a sentence for people.

The session steps (:mod:`streams.adapters.smtp_session`) catch what a step
raises; :func:`failure_of` says which :class:`~streams.core.probe.SessionFailure`
it is and what the host did, quoting at most :data:`QUOTE_LIMIT` characters
of the host's own words (controls removed, bytes that are not UTF-8 shown
as U+FFFD), so that no hostile reply reaches a verdict or a log line uncut.
"""

from __future__ import annotations

import re

import aiosmtplib
from aiosmtplib.protocol import MAX_LINE_LENGTH, MAX_RESPONSE_LENGTH

from streams.core.probe import SessionFailure
from streams.core.replies import Phase, SmtpReply

__all__ = [
    "QUOTE_LIMIT",
    "UnsolicitedReply",
    "describe",
    "failure_of",
    "protocol_detail",
    "quote",
    "readable_reply",
]

#: The most characters of a host's own words quoted in a detail sentence or a log line.
QUOTE_LIMIT = 120

_SURROGATES = re.compile("[\ud800-\udfff]")
_CONTROLS = re.compile("[\x00-\x1f\x7f]+")


class UnsolicitedReply(Exception):
    """The host sent ``count`` bytes beyond the reply just read: a reply ahead of its command."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} bytes beyond the reply")
        self.count = count


def failure_of(
    host: str,
    address: str,
    phase: Phase,
    exc: BaseException,
    *,
    timeout: float,
    port: int,
    command: str = "",
    connecting: bool = False,
) -> tuple[SessionFailure, str]:
    """The failure, and the sentence saying what the host did, for ``exc`` at ``phase``.

    Args:
        host: the mail host's name.
        address: the address connected to.
        phase: the session step that failed (CONNECT: the TCP connection or the greeting).
        exc: what the step raised.
        timeout: the step's own deadline, for the sentence.
        port: the SMTP port, for the sentence.
        command: the command named in the sentence (default: the phase's).
        connecting: the TCP connection was being opened (no greeting was due yet).
    """
    if connecting:
        if isinstance(exc, TimeoutError):
            detail = f"Could not connect to {host} ({address}:{port}) within {timeout:g} s."
            return SessionFailure.TIMEOUT, detail
        detail = f"Could not connect to {host} ({address}:{port}): {describe(exc)}."
        return SessionFailure.CONNECTION_FAILED, detail
    command = command or phase.value.upper()
    what = "greeting" if phase is Phase.CONNECT else f"reply to {command}"
    failure = SessionFailure.PROTOCOL_ERROR
    if isinstance(exc, TimeoutError):
        failure = SessionFailure.TIMEOUT
        detail = (
            f"No greeting from {host} ({address}) within {timeout:g} s."
            if phase is Phase.CONNECT
            else f"{host} did not complete its reply to {command} within {timeout:g} s."
        )
    elif isinstance(exc, UnsolicitedReply):
        detail = (
            f"{host} sent {exc.count} bytes beyond its {what}, before any command asked "
            "for them (RFC 5321 §4.2: one reply per command), so its replies no longer "
            "match mxprobe's commands."
        )
    elif isinstance(exc, aiosmtplib.SMTPResponseException):
        detail = protocol_detail(host, what, exc.message)
    elif isinstance(exc, UnicodeError):
        detail = "The address cannot be sent without SMTPUTF8."
    elif phase is Phase.CONNECT:
        # Connected, but the host hung up before its 220: no session was had.
        failure = SessionFailure.CONNECTION_FAILED
        detail = f"{host} ({address}) closed the connection before completing its greeting."
    else:
        failure = SessionFailure.DISCONNECTED
        detail = f"{host} closed the connection before completing its {what}."
    return failure, detail


def readable_reply(code: int, message: str) -> SmtpReply:
    """A reply as a value, its text readable whatever bytes the host sent.

    aiosmtplib decodes reply text with ``surrogateescape``; such lone
    surrogates cannot be encoded again (Avro, JSON), so they become U+FFFD
    here. Bytes that are not UTF-8 in the text do not break the protocol: the
    codes decide as usual (``550 5.1.1 <user> unknown \\xff`` is still a
    clear answer).
    """
    return SmtpReply.from_message(code, _SURROGATES.sub("\ufffd", message))


def protocol_detail(host: str, what: str, message: str) -> str:
    """Say how a reply broke the protocol, from aiosmtplib's message.

    Args:
        host: the mail host's name.
        what: the reply, as "greeting" or "reply to RCPT".
        message: aiosmtplib's message for the reply it refused.
    """
    if message.startswith("Response too long"):
        return (
            f"{host} sent a {what} longer than SMTP allows; mxprobe stopped reading at "
            f"{MAX_LINE_LENGTH // 1024} KiB a line or {MAX_RESPONSE_LENGTH // 1024} KiB a reply."
        )
    malformed = "Malformed SMTP response line:"
    if message.startswith(malformed):
        line = quote(message.removeprefix(malformed))
        return f"{host} sent a {what} with a line that does not start with a reply code: {line!r}."
    return f"{host} sent a {what} that is not a valid SMTP reply: {quote(message)!r}."


def quote(text: str) -> str:
    """A host's words, fit for one line of a sentence: readable, no controls, cut short."""
    text = _CONTROLS.sub(" ", _SURROGATES.sub("\ufffd", text)).strip()
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 1] + "…"


def describe(exc: BaseException) -> str:
    return quote(str(exc)) or type(exc).__name__
