"""Address parsing and normalisation over email-validator.

:func:`parse_address` turns one line of user input into an :class:`Address`
or a :class:`SyntaxProblem`; it never raises for bad input. The order of the
checks matters:

1. Surrounding ASCII spaces and tabs are stripped (CSV and TSV cells often
   carry them); :attr:`Address.original` keeps the text exactly as given.
2. Control characters (Unicode category ``Cc``: CR, LF, NUL, tab, DEL, the
   C1 controls) and the separators U+2028 / U+2029 anywhere in what is left
   are refused before anything else looks at the text: nothing holding a
   line break may ever reach an SMTP command line (RFC 5321 §2.3.8).
3. Special-use top-level domains are refused unless allowed (RFC 6761).
4. email-validator checks the syntax (RFC 5321 §4.1.2, RFC 5322 §3.4.1,
   RFC 6531 §3.3) and normalises (NFC local part, UTS #46 domain). Its
   errors are mapped to a stable :class:`SyntaxCode` by one table,
   :data:`_ERROR_CODES`; its sentence is kept as the message.
5. The local part is limited to 64 octets of UTF-8 (RFC 5321 §4.5.3.1.1;
   email-validator counts characters, not octets).
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

__all__ = [
    "INPUT_MAX_CHARS",
    "LOCAL_PART_MAX_OCTETS",
    "SPECIAL_USE_TLDS",
    "UNALLOWABLE_TLDS",
    "Address",
    "SyntaxCode",
    "SyntaxProblem",
    "parse_address",
]

#: RFC 5321 §4.5.3.1.1: "The maximum total length of a user name or other
#: local-part is 64 octets."
LOCAL_PART_MAX_OCTETS = 64

#: Longest text worth parsing. An address has at most 254 octets (RFC 5321
#: §4.5.3.1.3, with RFC 3696 errata 1690); quotes, full-width dots and
#: decomposed characters make a valid one longer as typed, never this long.
#: Longer text is refused before anything scans it (a 10 MB field takes
#: seconds to scan, and its sentence would quote it).
INPUT_MAX_CHARS = 1024

#: Top-level domains that never receive Internet mail, with what they are
#: reserved for. They and all their subdomains are refused unless allowed.
SPECIAL_USE_TLDS: dict[str, str] = {
    "test": "testing (RFC 6761 §6.2)",
    "example": "documentation examples (RFC 6761 §6.5)",
    "invalid": "names that must never resolve (RFC 6761 §6.4)",
    "localhost": "the local host (RFC 6761 §6.3)",
    "local": "multicast DNS on a local link (RFC 6762)",
    "onion": "Tor onion services (RFC 7686)",
    "alt": "names outside the DNS (RFC 9476)",
    "internal": "private networks (reserved by ICANN in 2024)",
    "arpa": "Internet infrastructure such as reverse DNS (RFC 3172)",
}

#: Special-use TLDs that email-validator refuses outright, whatever we pass
#: it; Settings rejects ``--allow-tld`` for these with a clear message.
UNALLOWABLE_TLDS: frozenset[str] = frozenset({"arpa", "invalid", "local", "localhost", "onion"})

# Cc is every C0/C1 control and DEL; U+2028/U+2029 are line and paragraph
# separators that some software turns into line breaks.
_LINE_SEPARATORS = frozenset({"\u2028", "\u2029"})
_SURROUNDING_BLANKS = " \t"
_CONTROL_NAMES = {"\0": "NUL", "\t": "tab", "\n": "line feed", "\r": "carriage return"}
# UTS #46 §2.3 treats these as label separators, like the full stop.
_DOT_LIKE = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


class SyntaxCode(enum.StrEnum):
    """Stable identifiers for why a string is not a usable address."""

    EMPTY = "empty"  # nothing but blanks
    CONTROL_CHARACTER = "control_character"  # CR, LF, NUL, any Cc, U+2028/2029
    DISPLAY_NAME = "display_name"  # "Ann <ann@example.com>" or angle brackets
    MISSING_AT = "missing_at"  # no @-sign
    EMPTY_LOCAL = "empty_local"  # nothing before the @-sign
    INVALID_LOCAL = "invalid_local"  # bad characters or dots before the @-sign
    LOCAL_TOO_LONG = "local_too_long"  # over 64 octets before the @-sign
    EMPTY_DOMAIN = "empty_domain"  # nothing after the @-sign
    INVALID_DOMAIN = "invalid_domain"  # not a valid host name after the @-sign
    DOMAIN_LITERAL = "domain_literal"  # "[192.0.2.1]", refused or malformed
    SPECIAL_USE_DOMAIN = "special_use_domain"  # under .test, .local, .onion, ...
    TOO_LONG = "too_long"  # over 254 octets in all
    INVALID = "invalid"  # anything the table does not name


@dataclass(frozen=True, slots=True)
class Address:
    """A syntactically valid, normalised address.

    ``ascii_email`` is ``None`` exactly when ``smtputf8`` is true: a local
    part with non-ASCII characters can only be sent to a server that
    offers SMTPUTF8 (RFC 6531 §3.3). A non-ASCII domain never needs it,
    since it travels as its IDNA A-label form (``ascii_domain``).
    """

    original: str  # exactly as given
    local_part: str  # normalised (NFC), case preserved
    domain: str  # Unicode form, lower case (e.g. "bücher.example")
    ascii_domain: str  # IDNA/punycode form (e.g. "xn--bcher-kva.example")
    normalized: str  # local_part@domain (Unicode form)
    ascii_email: str | None  # local_part@ascii_domain, or None when the local part needs SMTPUTF8
    smtputf8: bool  # True when the local part is not ASCII (RFC 6531)


@dataclass(frozen=True, slots=True)
class SyntaxProblem:
    """Why a string is not a usable address: a stable code and a sentence."""

    code: SyntaxCode
    message: str


# Blame the side of the @-sign that holds the fault (see _blame_side).
_EITHER_SIDE = None

# email-validator error sentences → our codes; the first pattern found in
# the message wins. Patterns are matched against email-validator 2.x
# wording; anything unmatched becomes SyntaxCode.INVALID.
_ERROR_CODES: tuple[tuple[re.Pattern[str], SyntaxCode | None], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), code)
    for pattern, code in (
        # First: the tail of this message is character names ("SOFT HYPHEN"),
        # which the rows below would misread.
        (r"two periods in a row|unsafe characters", _EITHER_SIDE),
        (r"display name|angle bracket|anything after the email address", SyntaxCode.DISPLAY_NAME),
        (r"must have an @-sign|instead of a regular at-sign", SyntaxCode.MISSING_AT),
        (r"something before the @-sign", SyntaxCode.EMPTY_LOCAL),
        (r"something after the @-sign", SyntaxCode.EMPTY_DOMAIN),
        (r"too long before the @-sign", SyntaxCode.LOCAL_TOO_LONG),
        (r"too long", SyntaxCode.TOO_LONG),
        (r"special-use or reserved name", SyntaxCode.SPECIAL_USE_DOMAIN),
        (r"bracket", SyntaxCode.DOMAIN_LITERAL),
        (
            r"^After Unicode normalization|before the @-sign|after close quote"
            r"|cannot start with a|contains an invalid character\.$",
            SyntaxCode.INVALID_LOCAL,
        ),
        (
            r"after the @-sign|cannot end with a|hyphen|two dashes|top-level domain",
            SyntaxCode.INVALID_DOMAIN,
        ),
    )
)


def parse_address(
    text: str,
    *,
    allowed_tlds: Iterable[str] = (),
    allow_domain_literal: bool = False,
) -> Address | SyntaxProblem:
    """Parse and normalise ``text``; never raises for bad input.

    Args:
        text: One address as a person typed it, without a display name.
            Surrounding ASCII spaces and tabs are ignored.
        allowed_tlds: Special-use top-level domains to accept (e.g.
            ``"test"`` for a sandbox mail world), with or without a leading
            dot, in any case. Entries in :data:`UNALLOWABLE_TLDS` have no
            effect.
        allow_domain_literal: Accept ``user@[192.0.2.1]`` (RFC 5321 §4.1.3).

    Returns:
        The normalised :class:`Address`, or a :class:`SyntaxProblem` with a
        stable code and a sentence that names the fault.
    """
    stripped = text.strip(_SURROUNDING_BLANKS)
    if not stripped:
        return SyntaxProblem(SyntaxCode.EMPTY, "The address is empty.")
    if len(stripped) > INPUT_MAX_CHARS:
        return SyntaxProblem(
            SyntaxCode.TOO_LONG,
            f"The address is {len(stripped)} characters long; an address has at most 254 "
            "octets (RFC 5321 §4.5.3.1.3), so check that the field holds one address.",
        )
    bad = _control_character(stripped)
    if bad is not None:
        return SyntaxProblem(
            SyntaxCode.CONTROL_CHARACTER,
            f"The address contains the control character {bad}; remove it "
            "(line breaks and other control characters can never be part of an address).",
        )
    allowed = frozenset(_tld_key(tld) for tld in allowed_tlds)
    loose_domain = _loose_domain(stripped.rpartition("@")[2]) if "@" in stripped else ""
    if loose_domain and not loose_domain.startswith("["):
        problem = _special_use_problem(loose_domain, allowed)
        if problem is not None:
            return problem

    try:
        valid = validate_email(
            stripped,
            allow_smtputf8=True,
            allow_empty_local=False,
            allow_quoted_local=True,
            allow_domain_literal=allow_domain_literal,
            allow_display_name=False,
            strict=True,  # enforces the 64-character local part limit
            check_deliverability=False,
            test_environment="test" in allowed,
            # A single-label domain is only ever acceptable as an allowed
            # special-use TLD (e.g. "user@example" in a sandbox).
            globally_deliverable=not (loose_domain in allowed and loose_domain in SPECIAL_USE_TLDS),
        )
    except EmailNotValidError as exc:
        message = str(exc)
        return SyntaxProblem(_code_for(message, stripped), message.rstrip(".") + ".")

    local_part = valid.local_part
    octets = len(local_part.encode("utf-8"))
    if octets > LOCAL_PART_MAX_OCTETS:
        return SyntaxProblem(
            SyntaxCode.LOCAL_TOO_LONG,
            f"The part before the @-sign is {octets} bytes long in UTF-8; "
            f"RFC 5321 allows at most {LOCAL_PART_MAX_OCTETS}.",
        )
    if not valid.ascii_domain.startswith("["):
        problem = _special_use_problem(valid.ascii_domain, allowed)
        if problem is not None:
            return problem

    # Derived here rather than taken from email-validator, whose flag
    # describes the local part before NFC normalisation (U+212A KELVIN SIGN
    # normalises to an ASCII "K").
    smtputf8 = not local_part.isascii()
    return Address(
        original=text,
        local_part=local_part,
        domain=valid.domain,
        ascii_domain=valid.ascii_domain,
        normalized=f"{local_part}@{valid.domain}",
        ascii_email=None if smtputf8 else f"{local_part}@{valid.ascii_domain}",
        smtputf8=smtputf8,
    )


def _control_character(text: str) -> str | None:
    """Name the first control character in ``text``, or return ``None``."""
    for char in text:
        if char in _LINE_SEPARATORS or unicodedata.category(char) == "Cc":
            name = _CONTROL_NAMES.get(char)
            return f"U+{ord(char):04X} ({name})" if name else f"U+{ord(char):04X}"
    return None


def _tld_key(tld: str) -> str:
    """Normalise an allowed-TLD entry: no blanks, no dots, lower case."""
    return tld.strip().strip(".").casefold()


def _loose_domain(domain: str) -> str:
    """A cheap lower-case form of a domain, good enough to spot its TLD."""
    return unicodedata.normalize("NFKC", domain).translate(_DOT_LIKE).casefold().rstrip(".")


def _special_use_problem(domain: str, allowed: frozenset[str]) -> SyntaxProblem | None:
    """Refuse ``domain`` when it lies under a special-use TLD not allowed."""
    tld = domain.rpartition(".")[2]
    purpose = SPECIAL_USE_TLDS.get(tld)
    if purpose is None or (tld in allowed and tld not in UNALLOWABLE_TLDS):
        return None
    head = (
        f"The domain {domain!r} is under .{tld}, which is reserved for {purpose} "
        "and does not receive Internet mail"
    )
    if tld in UNALLOWABLE_TLDS:
        return SyntaxProblem(
            SyntaxCode.SPECIAL_USE_DOMAIN, f"{head}; this top-level domain cannot be allowed."
        )
    return SyntaxProblem(SyntaxCode.SPECIAL_USE_DOMAIN, f"{head}; allow it with --allow-tld {tld}.")


def _code_for(message: str, text: str) -> SyntaxCode:
    """Map an email-validator error sentence to a stable code."""
    for pattern, code in _ERROR_CODES:
        if pattern.search(message):
            return code if code is not None else _blame_side(message, text)
    return SyntaxCode.INVALID


def _blame_side(message: str, text: str) -> SyntaxCode:
    """Tell which side of the @-sign caused an error worded the same for both.

    email-validator checks the local part before the domain, so the local
    part is at fault exactly when it fails the same way with a domain that
    is known to be good.
    """
    local = text.rpartition("@")[0]
    try:
        validate_email(
            f"{local}@example.com",
            allow_quoted_local=True,
            check_deliverability=False,
        )
    except EmailNotValidError as exc:
        if str(exc) == message:
            return SyntaxCode.INVALID_LOCAL
    return SyntaxCode.INVALID_DOMAIN
