"""Static signals over lists: disposable, role, free provider, typos.

:class:`StaticLists` looks an address up in lists it is given; the packaged
ones (two data packages and three data files) are loaded at the edge, by
:func:`streams.packaged_lists.packaged_lists`, once per process. Domains
are compared in their ASCII (A-label) form; the IDNA conversions are
email-validator's, the same that parsing an address uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from email_validator import EmailSyntaxError
from email_validator.syntax import validate_email_domain_name

from streams.core.typos import nearest_domain

__all__ = ["Signals", "StaticLists", "role_key"]

# RFC 1035 §2.3.4 (253 octets in text form); longer strings are no domain
# and are never handed to the IDNA codec, whose cost grows with length.
_DOMAIN_MAX_LENGTH = 253
# Role matching treats these as the same, and as nothing: no-reply,
# no_reply, no.reply and noreply are one role (RFC 2142 names are
# case-insensitive too).
_ROLE_SEPARATORS = str.maketrans("", "", "-_.")


@dataclass(frozen=True, slots=True)
class Signals:
    """What the address says about itself, before any network step."""

    disposable: bool
    role: bool
    free_provider: bool
    did_you_mean: str | None  # a full suggested address, e.g. "ann@gmail.com"


@dataclass(frozen=True, slots=True)
class StaticLists:
    """Lookup tables for the static signals of an address.

    Domains are stored in ASCII (A-label) form, lower case. ``role`` holds
    local parts in their matching form (see :func:`role_key`).
    """

    disposable: frozenset[str]
    free: frozenset[str]
    role: frozenset[str]
    common: tuple[str, ...] = ()  # big providers, the targets of did_you_mean
    misspelled: frozenset[str] = frozenset()  # listed upstream, yet typos of ``common``
    # What each domain looked up so far is (disposable, free, suggested domain):
    # the typo search is the costly part of a lookup, and a stream sees the
    # same domains again and again. A memo of a pure function, bounded.
    _domains: dict[str, tuple[bool, bool, str | None]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def with_extras(
        self,
        *,
        extra_disposable: Iterable[str] = (),
        extra_free: Iterable[str] = (),
        extra_role: Iterable[str] = (),
    ) -> StaticLists:
        """These lists plus the operator's own additions (``self`` when there are none).

        Args:
            extra_disposable: Domains to treat as disposable, with their
                subdomains. Blanks around an entry and a leading ``@`` are
                ignored; Unicode and A-label forms are both accepted.
            extra_free: Domains to treat as free mailbox providers, in the
                same form.
            extra_role: Local parts to treat as role accounts.

        Raises:
            ValueError: An extra domain is not a valid domain name.
        """
        disposable = _domain_entries(extra_disposable)
        free = _domain_entries(extra_free)
        role = frozenset(filter(None, map(role_key, _entries(extra_role))))
        if not (disposable or free or role):
            return self
        return dataclasses.replace(
            self,
            disposable=self.disposable | disposable,
            free=self.free | free,
            role=self.role | role,
        )

    def signals(self, local_part: str, domain: str) -> Signals:
        """Look up the static signals of ``local_part@domain``.

        A domain is disposable or free when it, or any domain it is a
        subdomain of, is listed (``a.mailinator.com`` is disposable).

        ``did_you_mean`` suggests a big provider for a likely typo (see
        :mod:`streams.core.typos`), but never for a known domain: one in
        the common, free or disposable lists, unless it is one of the
        known misspellings (``gmial.com`` is listed as disposable, and
        still gets ``gmail.com`` suggested).

        Args:
            local_part: The normalised local part.
            domain: The domain, in Unicode or ASCII form.

        Returns:
            The signals; never raises.
        """
        facts = self._domains.get(domain)
        if facts is None:
            facts = self._domain_facts(domain)
            if len(self._domains) >= _DOMAIN_MEMO:
                self._domains.clear()
            self._domains[domain] = facts
        disposable, free, suggestion = facts
        return Signals(
            disposable=disposable,
            role=role_key(local_part) in self.role,
            free_provider=free,
            did_you_mean=None if suggestion is None else f"{local_part}@{suggestion}",
        )

    def _domain_facts(self, domain: str) -> tuple[bool, bool, str | None]:
        ascii_domain, unicode_domain = _domain_forms(domain)
        disposable = _listed(ascii_domain, self.disposable)
        free = _listed(ascii_domain, self.free)
        known = (disposable or free) and ascii_domain not in self.misspelled
        suggestion = None if known else nearest_domain(unicode_domain, self.common)
        return disposable, free, suggestion


#: Domains whose lookups StaticLists remembers (then it starts afresh).
_DOMAIN_MEMO = 100_000


def role_key(local_part: str) -> str:
    """The form in which local parts are compared with the role list.

    Lower case, without surrounding quotes, without a ``+tag``
    (``info+news``), and without the separators ``-``, ``_`` and ``.``.
    """
    bare = local_part.strip('"').casefold().partition("+")[0]
    return bare.translate(_ROLE_SEPARATORS)


def _entries(values: Iterable[str]) -> tuple[str, ...]:
    """Accept a lone string as one entry rather than as its characters."""
    return (values,) if isinstance(values, str) else tuple(values)


def _domain_entries(values: Iterable[str]) -> frozenset[str]:
    """Normalise the operator's domain entries to lower-case ASCII form."""
    domains: set[str] = set()
    for value in _entries(values):
        entry = value.strip().lstrip("@").strip(".")
        if not entry:
            continue
        if any(char.isspace() for char in entry) or len(entry) > _DOMAIN_MAX_LENGTH:
            raise ValueError(f"The extra domain {value!r} is not a domain name; fix or remove it.")
        try:
            domains.add(_idna(entry)[0])
        except EmailSyntaxError as exc:
            raise ValueError(
                f"The extra domain {value!r} is not a valid domain name ({exc}); fix or remove it."
            ) from exc
    return frozenset(domains)


def _domain_forms(domain: str) -> tuple[str, str]:
    """The ASCII (A-label) and Unicode forms of ``domain``, lower case.

    Falls back to the lower-cased text for both when the IDNA codec
    refuses it (it then matches nothing, but never raises).
    """
    text = domain.strip().rstrip(".").lower()
    if len(text) > _DOMAIN_MAX_LENGTH:
        return text, text
    if text.isascii() and "xn--" not in text:
        return text, text
    try:
        return _idna(text)
    except EmailSyntaxError:
        return text, text


def _idna(domain: str) -> tuple[str, str]:
    """The ASCII and Unicode forms of ``domain`` (email-validator's IDNA, UTS #46).

    Raises:
        EmailSyntaxError: ``domain`` is not a valid domain name.
    """
    forms = validate_email_domain_name(domain, test_environment=True, globally_deliverable=False)
    return forms["ascii_domain"], forms["domain"]


def _listed(domain: str, table: frozenset[str]) -> bool:
    """``domain`` or one of the domains above it is in ``table``."""
    if len(domain) > _DOMAIN_MAX_LENGTH:
        return False
    if domain in table:
        return True
    start = domain.find(".")
    while start != -1:
        if domain[start + 1 :] in table:
            return True
        start = domain.find(".", start + 1)
    return False
