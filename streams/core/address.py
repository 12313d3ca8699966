"""Address parsing and normalisation over email-validator.

(skeleton: the helper replaces the bodies)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Address", "SyntaxProblem", "parse_address"]


@dataclass(frozen=True, slots=True)
class Address:
    """A syntactically valid, normalised address."""

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

    code: str
    message: str


def parse_address(
    text: str,
    *,
    allowed_tlds: Iterable[str] = (),
    allow_domain_literal: bool = False,
) -> Address | SyntaxProblem:
    """Parse and normalise ``text``; never raises for bad input."""
    raise NotImplementedError
