"""Limits per mail host by provider: the packaged rules and the operator's file.

:class:`Politeness` gives each mail host its :class:`~streams.core.host_state.HostLimits`:
the first rule whose host pattern matches (the operator's rules first, then
the packaged ``data/politeness.toml``), else the defaults. Packaged rules are
never looser than the defaults; the operator's rules apply as written.

Pure: the TOML text is parsed here, reading files is the caller's (the
packaged file is read with :mod:`importlib.resources`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from streams.core.host_state import DEFAULT_LIMITS, LIMIT_BOUNDS, HostLimits

__all__ = ["Politeness", "ProviderRule"]

# --- limits per provider -------------------------------------------------------------

# The rates a provider entry may give, and the HostLimits field each sets
# (with the divisor to per-second or per-minute).
_RATE_KEYS: Mapping[str, tuple[str, float]] = {
    "rcpt_per_second": ("rcpt_per_second", 1.0),
    "rcpt_per_minute": ("rcpt_per_second", 60.0),
    "rcpt_per_hour": ("rcpt_per_second", 3600.0),
    "connections_per_minute": ("connections_per_minute", 1.0),
    "connections_per_hour": ("connections_per_minute", 60.0),
}
_LIMIT_KEYS = frozenset(LIMIT_BOUNDS) - {target for target, _ in _RATE_KEYS.values()}
_PROVIDER_KEYS = frozenset({"name", "hosts"}) | _LIMIT_KEYS | frozenset(_RATE_KEYS)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PATTERN = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
_PACKAGED_SOURCE = "the packaged politeness.toml"

#: One provider rule: (host pattern, limits, provider name).
ProviderRule = tuple[str, HostLimits, str]


@dataclass(frozen=True, slots=True)
class Politeness:
    """Limits per mail host: the defaults, then rules matched by host name (user rules first)."""

    defaults: HostLimits = DEFAULT_LIMITS
    rules: tuple[ProviderRule, ...] = ()  # (host pattern, limits, provider name)

    def limits_for(self, host: str) -> HostLimits:
        """The limits of the first rule whose pattern matches ``host``, else the defaults.

        ``*.yahoodns.net`` matches any name ending in ``.yahoodns.net`` (not
        the bare ``yahoodns.net``); any other pattern is an exact name.
        Matching ignores case and a trailing dot.
        """
        rule = self._rule_for(host)
        return self.defaults if rule is None else rule[1]

    def provider_of(self, host: str) -> str | None:
        """The provider name of the first rule matching ``host``, or None."""
        rule = self._rule_for(host)
        return None if rule is None else rule[2]

    def _rule_for(self, host: str) -> ProviderRule | None:
        name = _host_key(host)
        return next((rule for rule in self.rules if _matches(rule[0], name)), None)

    @classmethod
    def packaged(
        cls,
        defaults: HostLimits = DEFAULT_LIMITS,
        *,
        extra: str | None = None,
        extra_source: str = "the politeness file",
    ) -> Politeness:
        """The packaged rules (``data/politeness.toml``), ``extra``'s rules first.

        A packaged rule is never looser than ``defaults`` (rates, bursts,
        sessions and recipients per session are the smaller of the two), so
        lowering the defaults slows every host; a rule in ``extra`` applies
        as written.

        Args:
            defaults: The limits of hosts no rule names; each rule's unset
                limits come from them too.
            extra: The TOML text of the operator's file, or None.
            extra_source: How messages name the operator's file.

        Returns:
            The politeness table.

        Raises:
            ValueError: ``extra`` is invalid; the sentence names the problem
                and the fix.
        """
        user = () if extra is None else cls.parse(extra, defaults, source=extra_source)
        return cls(defaults=defaults, rules=user + _packaged_rules(defaults))

    @classmethod
    def parse(cls, text: str, defaults: HostLimits, *, source: str) -> tuple[ProviderRule, ...]:
        """The rules of a politeness TOML text, in file order.

        Each ``[[provider]]`` table has a ``name``, ``hosts`` (patterns) and
        any limits: one of ``rcpt_per_second`` / ``rcpt_per_minute`` /
        ``rcpt_per_hour``, one of ``connections_per_minute`` /
        ``connections_per_hour``, and the other :class:`HostLimits` fields.
        Unset limits come from ``defaults``.

        Raises:
            ValueError: a TOML syntax error (with its line), an unknown key,
                a bad number or a bad host pattern, named with ``source``.
        """
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(
                f"{_capital(source)} is not valid TOML: {exc}; fix it there."
            ) from None
        unknown = sorted(set(document) - {"provider"})
        if unknown:
            raise ValueError(
                f"{_capital(source)} has the unknown top-level key {unknown[0]!r}; "
                "it may hold only [[provider]] tables."
            )
        providers = document.get("provider", [])
        if not isinstance(providers, list) or not all(isinstance(p, dict) for p in providers):
            raise ValueError(f"In {source}, write each provider as a [[provider]] table.")
        rules: list[ProviderRule] = []
        for number, entry in enumerate(providers, start=1):
            rules.extend(_provider_rules(entry, number, defaults, source))
        return tuple(rules)


# Limits where a larger figure is looser: a packaged rule never loosens the
# operator's defaults on these (a user rule may: it says so explicitly).
_LOOSER_WHEN_LARGER = (
    "rcpt_per_second",
    "rcpt_burst",
    "connections_per_minute",
    "connection_burst",
    "max_sessions",
    "rcpt_per_session",
)


@functools.cache
def _packaged_rules(defaults: HostLimits) -> tuple[ProviderRule, ...]:
    """The packaged rules over ``defaults``, never looser than them (parsed once per process)."""
    rules = Politeness.parse(_packaged_text(), defaults, source=_PACKAGED_SOURCE)
    return tuple((pattern, _no_looser(limits, defaults), name) for pattern, limits, name in rules)


def _no_looser(limits: HostLimits, defaults: HostLimits) -> HostLimits:
    tighter = {
        name: min(getattr(limits, name), getattr(defaults, name)) for name in _LOOSER_WHEN_LARGER
    }
    return dataclasses.replace(limits, **tighter)


@functools.cache
def _packaged_text() -> str:
    data = resources.files("streams.core").joinpath("data", "politeness.toml")
    return data.read_text(encoding="utf-8")


def _provider_rules(
    entry: Mapping[str, Any], number: int, defaults: HostLimits, source: str
) -> list[ProviderRule]:
    """The rules of one ``[[provider]]`` table (one per host pattern)."""
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            f'Provider #{number} in {source} has no name; add name = "..." to its table.'
        )
    where = f"Provider {name!r} in {source}"
    unknown = sorted(set(entry) - _PROVIDER_KEYS)
    if unknown:
        raise ValueError(
            f"{where} has the unknown key {unknown[0]!r}; "
            f"use name, hosts or a limit: {', '.join(sorted(_PROVIDER_KEYS - {'name', 'hosts'}))}."
        )
    patterns = _patterns(entry.get("hosts"), where)
    limits = _limits(entry, defaults, where)
    return [(pattern, limits, name.strip()) for pattern in patterns]


def _patterns(hosts: Any, where: str) -> list[str]:
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
        raise ValueError(f'{where} needs hosts = ["*.example.com", ...], a list of host patterns.')
    patterns = [_host_key(host) for host in hosts]
    for host, pattern in zip(hosts, patterns, strict=True):
        if _PATTERN.fullmatch(pattern) is None:
            raise ValueError(
                f"{where} has the host pattern {host!r}; write an exact host name "
                "(mx.example.com) or '*.' and a domain (*.example.com)."
            )
    return patterns


def _limits(entry: Mapping[str, Any], defaults: HostLimits, where: str) -> HostLimits:
    values: dict[str, Any] = {}
    set_by: dict[str, str] = {}
    for key, value in entry.items():
        if key in ("name", "hosts"):
            continue
        field, divisor = _RATE_KEYS.get(key, (key, 1.0))
        if field in set_by:
            raise ValueError(f"{where} sets both {set_by[field]} and {key}; keep one.")
        problem = LIMIT_BOUNDS[field].problem(key, value)
        if problem is not None:
            raise ValueError(f"{where}: {problem}; fix the value.")
        set_by[field] = key
        values[field] = value if LIMIT_BOUNDS[field].whole else float(value) / divisor
    try:
        return dataclasses.replace(defaults, **values)
    except ValueError as exc:
        reason = str(exc)
        raise ValueError(f"{where}: {reason[:1].lower()}{reason[1:]}") from None


def _host_key(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _matches(pattern: str, name: str) -> bool:
    pattern = _host_key(pattern)
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return name.endswith(suffix) and len(name) > len(suffix)
    return name == pattern


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
